//! Which SIMD instruction sets the quantized kernels were compiled for, and whether this CPU
//! has them. candle selects its kernels at compile time, so a wheel built for AVX2 needs it.

/// `(feature, compiled_for, present_on_this_cpu)` for the features that matter to the kernels.
pub fn kernel_features() -> Vec<(&'static str, bool, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        vec![
            (
                "avx",
                cfg!(target_feature = "avx"),
                std::arch::is_x86_feature_detected!("avx"),
            ),
            (
                "avx2",
                cfg!(target_feature = "avx2"),
                std::arch::is_x86_feature_detected!("avx2"),
            ),
            (
                "fma",
                cfg!(target_feature = "fma"),
                std::arch::is_x86_feature_detected!("fma"),
            ),
            (
                "f16c",
                cfg!(target_feature = "f16c"),
                std::arch::is_x86_feature_detected!("f16c"),
            ),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        vec![(
            "neon",
            cfg!(target_feature = "neon"),
            std::arch::is_aarch64_feature_detected!("neon"),
        )]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}
