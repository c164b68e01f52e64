//! Device selection: `auto`, `cpu` or `cuda:N`.
use crate::error::{Error, Result};
use tch::Device;

/// Parses a `--device` value. `auto` takes `cuda:0` when libtorch sees a GPU
/// and the CPU otherwise; `cuda:N` is checked against the visible devices
/// (multi-GPU nodes pick `cuda:<local rank>` themselves, since
/// `Device::cuda_if_available()` only ever gives `cuda:0`).
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let index = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| {
                    Error::invalid("--device", s, "expected cuda:N with N an integer")
                })?,
                None if s == "cuda" => 0,
                None => {
                    return Err(Error::invalid(
                        "--device",
                        s,
                        "expected auto, cpu or cuda:N",
                    ))
                }
            };
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                return Err(Error::invalid(
                    "--device",
                    s,
                    format!(
                        "libtorch sees {count} CUDA device(s); use --device cpu, or run on a GPU node \
                         with the CUDA build of torch"
                    ),
                ));
            }
            Ok(Device::Cuda(index))
        }
        s => Err(Error::invalid(
            "--device",
            s,
            "expected auto, cpu or cuda:N",
        )),
    }
}

/// Human-readable name of a device for logs and metadata.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
