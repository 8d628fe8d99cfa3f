//! The machine against the reference model: random input sequences under every
//! config, every reply, action and invariant checked after each step.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use streamflight_core::testkit::{Harness, Input, Model, configs};

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Input;

    fn init_state() -> BoxedStrategy<Model> {
        proptest::sample::select(configs()).prop_map(Model::new).boxed()
    }

    fn transitions(model: &Model) -> BoxedStrategy<Input> {
        // One index past the end names a foreign id; indices stay in range so
        // shrinking keeps sequences meaningful.
        let flight = 0..=model.flights() as u8;
        let request = 0..=model.requests() as u8;
        prop_oneof![
            4 => (0u8..3).prop_map(Input::Request),
            2 => (0u8..3).prop_map(Input::Join),
            2 => flight.clone().prop_map(Input::Prepared),
            2 => flight.clone().prop_map(Input::Ended),
            1 => flight.clone().prop_map(Input::Truncated),
            2 => request.clone().prop_map(Input::Cancel),
            1 => request.clone().prop_map(Input::Drop),
            2 => request.clone().prop_map(Input::Finish),
            2 => flight.clone().prop_map(Input::Done),
            2 => request.clone().prop_map(Input::Detach),
            2 => request.prop_map(Input::Resume),
            2 => Just(Input::Advance),
        ]
        .boxed()
    }

    fn apply(mut model: Model, input: &Input) -> Model {
        model.apply(*input);
        model
    }
}

struct MachineTest;

impl StateMachineTest for MachineTest {
    type SystemUnderTest = Harness;
    type Reference = Reference;

    fn init_test(model: &Model) -> Harness {
        Harness::new(model.config().clone())
    }

    fn apply(mut harness: Harness, _: &Model, input: Input) -> Harness {
        harness.step(input);
        harness
    }

    fn check_invariants(harness: &Harness, _: &Model) {
        harness.check();
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 10_000, ..ProptestConfig::default() })]

    /// Every rule of the control plane, sampled: up to 60 inputs per case.
    #[test]
    fn machine_agrees_with_the_model(sequential 1..60 => MachineTest);
}
