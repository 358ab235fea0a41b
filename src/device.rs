//! Choosing the device: what `"auto"` means on each platform and build, and what an explicit
//! request needs.

use mistralrs::Device;

use crate::failure::{Failure, FailureKind, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(usize),
    Metal(usize),
}

/// Parses `"auto" | "cpu" | "cuda" | "cuda:N" | "metal" | "metal:N"`.
pub fn parse_device(spec: &str) -> Outcome<DeviceRequest> {
    let spec = spec.trim().to_ascii_lowercase();
    let (name, index) = match spec.split_once(':') {
        Some((n, i)) => {
            let i = i.parse::<usize>().map_err(|_| {
                Failure::new(
                    FailureKind::Device,
                    format!("device index `{i}` is not a number; use e.g. \"cuda:0\""),
                )
            })?;
            (n.to_string(), Some(i))
        }
        None => (spec.clone(), None),
    };
    match (name.as_str(), index) {
        ("auto", None) => Ok(DeviceRequest::Auto),
        ("cpu", None) => Ok(DeviceRequest::Cpu),
        ("cuda", i) => Ok(DeviceRequest::Cuda(i.unwrap_or(0))),
        ("metal", i) => Ok(DeviceRequest::Metal(i.unwrap_or(0))),
        _ => Err(Failure::new(
            FailureKind::Device,
            format!(
                "unknown device `{spec}`; use \"auto\", \"cpu\", \"cuda\", \"cuda:N\" or \"metal\""
            ),
        )),
    }
}

/// The cargo features this build was compiled with.
pub fn compiled_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "cuda") {
        f.push("cuda");
    }
    if cfg!(feature = "cudnn") {
        f.push("cudnn");
    }
    if cfg!(feature = "flash-attn") {
        f.push("flash-attn");
    }
    if cfg!(feature = "metal") {
        f.push("metal");
    }
    if cfg!(feature = "mkl") {
        f.push("mkl");
    }
    if cfg!(feature = "accelerate") {
        f.push("accelerate");
    }
    f
}

fn cuda(index: usize) -> Outcome<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Failure::new(
            FailureKind::Device,
            "this build of pcai-inference has no CUDA support: install the CUDA wheel, or build \
             from source with the `cuda` feature (`maturin build --release --features cuda`)",
        ));
    }
    Device::new_cuda(index).map_err(|e| {
        Failure::new(
            FailureKind::Device,
            format!("CUDA device {index} is not usable ({e}); check the driver with `nvidia-smi` or use device=\"cpu\""),
        )
    })
}

fn metal(index: usize) -> Outcome<Device> {
    if !cfg!(feature = "metal") {
        return Err(Failure::new(
            FailureKind::Device,
            "this build of pcai-inference has no Metal support: on macOS install the Metal wheel, \
             or build from source with the `metal` feature (`maturin build --release --features metal`)",
        ));
    }
    Device::new_metal(index).map_err(|e| {
        Failure::new(
            FailureKind::Device,
            format!("Metal device {index} is not usable ({e}); use device=\"cpu\""),
        )
    })
}

/// Resolves a request to a device and its display name (`"cpu"`, `"cuda:0"`, `"metal:0"`).
pub fn resolve_device(request: DeviceRequest) -> Outcome<(Device, String)> {
    match request {
        DeviceRequest::Cpu => Ok((Device::Cpu, "cpu".into())),
        DeviceRequest::Cuda(i) => Ok((cuda(i)?, format!("cuda:{i}"))),
        DeviceRequest::Metal(i) => Ok((metal(i)?, format!("metal:{i}"))),
        DeviceRequest::Auto => Ok(auto_device()),
    }
}

/// CUDA on Linux when built with it and a GPU answers, Metal on macOS when built with it,
/// otherwise the CPU. Windows always uses the CPU.
fn auto_device() -> (Device, String) {
    if cfg!(target_os = "linux") && cfg!(feature = "cuda") {
        if let Ok(d) = cuda(0) {
            return (d, "cuda:0".into());
        }
    }
    if cfg!(target_os = "macos") && cfg!(feature = "metal") {
        if let Ok(d) = metal(0) {
            return (d, "metal:0".into());
        }
    }
    (Device::Cpu, "cpu".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!(parse_device("auto").unwrap(), DeviceRequest::Auto);
        assert_eq!(parse_device(" CPU ").unwrap(), DeviceRequest::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), DeviceRequest::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), DeviceRequest::Cuda(3));
        assert_eq!(parse_device("metal").unwrap(), DeviceRequest::Metal(0));
        assert_eq!(parse_device("tpu").unwrap_err().kind, FailureKind::Device);
        assert_eq!(
            parse_device("cuda:x").unwrap_err().kind,
            FailureKind::Device
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_it() {
        let err = resolve_device(DeviceRequest::Cuda(0)).unwrap_err();
        assert_eq!(err.kind, FailureKind::Device);
        assert!(err.message.contains("`cuda` feature"), "{}", err.message);
    }

    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    #[test]
    fn auto_is_cpu_on_a_cpu_build() {
        assert_eq!(resolve_device(DeviceRequest::Auto).unwrap().1, "cpu");
    }
}
