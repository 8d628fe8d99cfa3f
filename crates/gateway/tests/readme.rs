//! The README's flag table against the binary's own flags: every flag, its environment variable
//! and its default, so that the documentation an operator reads never drifts from the program.

use clap::CommandFactory;
use streamflight_gateway::Settings;

/// The rows of the README's flag table: (flag, env, default cell).
fn readme_rows() -> Vec<(String, String, String)> {
    let readme = include_str!("../../../README.md");
    let start = readme.find("<!-- flags:").expect("the flag table's start marker");
    let end = readme.find("<!-- /flags -->").expect("the flag table's end marker");
    readme[start..end]
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 3, "three cells: {line}");
            let unquote = |cell: &str| cell.trim_matches('`').to_owned();
            (unquote(cells[0]), unquote(cells[1]), cells[2].to_owned())
        })
        .collect()
}

#[test]
fn the_readme_flag_table_is_the_binarys() {
    let rows = readme_rows();
    let command = Settings::command();
    let flags: Vec<_> = command.get_arguments().filter(|arg| arg.get_long().is_some()).collect();
    let documented: Vec<&str> = rows.iter().map(|(flag, _, _)| flag.as_str()).collect();
    let actual: Vec<String> =
        flags.iter().filter_map(|arg| arg.get_long()).map(|long| format!("--{long}")).collect();
    assert_eq!(documented, actual, "the README lists every flag, in the binary's order");
    for ((flag, env, default), arg) in rows.iter().zip(&flags) {
        let actual_env = arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        assert_eq!(env, &actual_env, "{flag}'s environment variable");
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        match defaults.as_slice() {
            [value] => assert_eq!(default, &format!("`{value}`"), "{flag}'s default"),
            [] => assert!(
                default.starts_with("none") || default == "off",
                "{flag} has no default in the binary, the README says {default}"
            ),
            more => panic!("{flag}: several defaults {more:?}"),
        }
    }
}
