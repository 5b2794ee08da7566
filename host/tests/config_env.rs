//! The config's environment overrides, in a process of their own (they set variables).

/// A value figment 0.10 cannot unescape (a backslash after a non-ASCII character made it
/// panic; found by the config fuzz target) is refused with the variable's name, not a panic.
#[test]
fn an_environment_value_figment_cannot_read_is_refused_by_name() {
    let text = "[[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\n\
                [[service.server]]\naddr = \"10.77.1.1:8080\"\n";
    std::env::set_var("RINGVS_DIRECTOR__DEVICE", "\"ringvs\u{e9}\\\\0\"");
    let err = ringvs::config::from_str_with_env(text, "t.toml").unwrap_err();
    assert_eq!(err.key, "RINGVS_DIRECTOR__DEVICE", "{err}");
    assert!(
        err.to_string().contains("put it in the config file"),
        "{err}"
    );
    // A plain value still applies.
    std::env::set_var("RINGVS_DIRECTOR__DEVICE", "rvsenv0");
    let cfg = ringvs::config::from_str_with_env(text, "t.toml").unwrap();
    assert_eq!(cfg.director.device, "rvsenv0");
    std::env::remove_var("RINGVS_DIRECTOR__DEVICE");
}
