//! Flag parsing shared by the benches (they run without a test harness, so
//! `cargo bench -- --device cuda:0 …` reaches them as plain arguments).
use tch::Device;

/// The value after `flag` on the command line, if any.
pub fn flag_value(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A numeric flag, or `default` when absent.
pub fn number<T: std::str::FromStr>(flag: &str, default: T) -> T {
    flag_value(flag)
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{flag}: not a number")))
        .unwrap_or(default)
}

/// `--device auto|cpu|cuda:N` (default auto).
pub fn device() -> Device {
    taser::device::parse_device(&flag_value("--device").unwrap_or_else(|| "auto".into()))
        .expect("--device")
}
