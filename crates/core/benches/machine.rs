//! The control plane's cost per input: lead, follow, join, cancel in company, last one out,
//! and with time: detach, resume, a resume window that passes (R18).
//! Each sample times batches of 1,000 inputs on a warmed-up machine; setup and clean-up are untimed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamflight_core::{Admission, Config, Machine};

const BATCH: u64 = 1_000;

fn drain(machine: &mut Machine<u64>) {
    while let Some(action) = machine.poll_action() {
        black_box(action);
    }
}

/// Times `timed` over batches of `BATCH` inputs, with `setup` before and `clean` after each batch untimed.
fn batched<S>(
    iters: u64,
    machine: &mut Machine<u64>,
    mut setup: impl FnMut(&mut Machine<u64>) -> S,
    mut timed: impl FnMut(&mut Machine<u64>, &mut S, u64),
    mut clean: impl FnMut(&mut Machine<u64>, S),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters.div_ceil(BATCH) {
        let mut state = setup(machine);
        drain(machine);
        let start = Instant::now();
        for i in 0..BATCH {
            timed(machine, &mut state, i);
        }
        total += start.elapsed();
        clean(machine, state);
        drain(machine);
    }
    total.mul_f64(iters as f64 / (iters.div_ceil(BATCH) * BATCH) as f64)
}

fn lead_one(machine: &mut Machine<u64>, key: u64) -> Admission {
    let admission = machine.handle_request(key);
    drain(machine);
    admission
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("machine");
    group.throughput(Throughput::Elements(1));
    let mut machine = Machine::new(Config::default());

    group.bench_function("lead", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                &mut machine,
                |_| Vec::with_capacity(BATCH as usize),
                |m, admitted, i| admitted.push(lead_one(m, i)),
                |m, admitted| {
                    for a in admitted {
                        m.handle_drop(a.id).unwrap();
                    }
                },
            )
        })
    });

    // Follow joins a preparing flight, join a streaming one: the same batch otherwise.
    for (name, streaming) in [("follow", false), ("join", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                batched(
                    iters,
                    &mut machine,
                    |m| {
                        let leader = m.handle_request(7);
                        if streaming {
                            m.handle_prepared(leader.flight).unwrap();
                        }
                        (leader, Vec::with_capacity(BATCH as usize))
                    },
                    |m, (_, admitted), _| admitted.push(lead_one(m, 7)),
                    |m, (leader, admitted)| {
                        m.handle_ended(leader.flight).unwrap();
                        for a in admitted.into_iter().chain([leader]) {
                            m.handle_finished(a.id).unwrap();
                        }
                    },
                )
            })
        });
    }

    group.bench_function("cancel_in_company", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                &mut machine,
                |m| {
                    let leader = m.handle_request(7);
                    let company: Vec<_> = (0..BATCH).map(|_| m.handle_request(7)).collect();
                    (leader, company)
                },
                |m, (_, company), i| {
                    m.handle_cancel(company[i as usize].id).unwrap();
                    drain(m);
                },
                |m, (leader, _)| m.handle_cancel(leader.id).unwrap(),
            )
        })
    });

    group.bench_function("last_one_out", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                &mut machine,
                |m| (0..BATCH).map(|key| m.handle_request(key)).collect::<Vec<_>>(),
                |m, alone, i| {
                    m.handle_cancel(alone[i as usize].id).unwrap();
                    drain(m);
                },
                |_, _| {},
            )
        })
    });
    // With time (R18): a flight with company, each member detached, resumed, or left to expire.
    let window = Duration::from_secs(10);
    let mut timed = Machine::new(Config::default().resume_window(window));
    let company = |m: &mut Machine<u64>| {
        let leader = m.handle_request(7);
        m.handle_prepared(leader.flight).unwrap();
        let company: Vec<_> = (0..BATCH).map(|_| m.handle_request(7)).collect();
        (leader, company)
    };
    // The same company, every member detached.
    let detached = |m: &mut Machine<u64>| {
        let state = company(m);
        for (i, a) in state.1.iter().enumerate() {
            m.handle_detach(a.id, Duration::from_nanos(i as u64)).unwrap();
        }
        state
    };
    let leave = |m: &mut Machine<u64>, (leader, company): (Admission, Vec<Admission>)| {
        for a in company.into_iter().chain([leader]) {
            let _ = m.handle_cancel(a.id);
        }
    };
    group.bench_function("detach", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                &mut timed,
                company,
                |m, (_, company), i| {
                    m.handle_detach(company[i as usize].id, Duration::from_nanos(i)).unwrap()
                },
                leave,
            )
        })
    });
    group.bench_function("resume", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                &mut timed,
                detached,
                |m, (_, company), i| {
                    m.handle_resume(company[i as usize].id, 0).unwrap();
                    drain(m);
                },
                leave,
            )
        })
    });
    group.bench_function("window_passes", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                &mut timed,
                detached,
                // Each call is one window's end: the request is dropped (R12).
                |m, _, i| {
                    m.handle_timeout(window + Duration::from_nanos(i));
                    drain(m);
                },
                leave,
            )
        })
    });
    group.finish();
    assert!(machine.is_idle(), "the bench left state behind");
    assert!(timed.is_idle(), "the timed bench left state behind");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
