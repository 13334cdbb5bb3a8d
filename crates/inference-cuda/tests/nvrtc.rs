//! The kernels compile under NVRTC for the architectures Agora supports (no GPU needed; NVRTC
//! is installed by `scripts/fetch-nvrtc`, which `scripts/test` runs).

#[test]
fn kernels_compile_for_every_supported_architecture() {
    assert!(
        agora_inference_cuda::nvrtc_present(),
        "NVRTC is missing: run scripts/fetch-nvrtc and put the directory it prints on LD_LIBRARY_PATH (scripts/test does both)"
    );
    for arch in ["compute_75", "compute_80", "compute_89", "compute_90"] {
        let ptx = agora_inference_cuda::compile(arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"))
            .to_src();
        for name in agora_inference_cuda::KERNEL_NAMES {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{arch}: no entry point {name} in the PTX"
            );
        }
        // The products' explicit fused multiply-adds survive compilation (that nothing else is
        // fused is what --fmad=false asks of NVRTC; this does not check it).
        assert!(
            ptx.contains("fma.rn.f32"),
            "{arch}: the products' fused multiply-adds are missing"
        );
    }
}

#[test]
fn loading_without_a_driver_or_with_bad_weights_is_a_clear_error() {
    use agora_inference_cuda::*;
    let empty = HostMatrix {
        format: Format::Q4_1,
        rows: 0,
        cols: 0,
        bytes: &[],
    };
    let host = HostModel {
        config: Config {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            embedding: 576,
            ffn: 1536,
            eps: 1e-5,
            context_length: 8,
        },
        embeddings: HostEmbeddings::Tied,
        layers: vec![HostLayer {
            attn_norm: &[],
            qkv: empty,
            wo: empty,
            ffn_norm: &[],
            gate_up: empty,
            down: empty,
        }],
        norm: &[],
        output: empty,
        cos: &[],
        sin: &[],
    };
    let err = Model::load(0, &host).unwrap_err();
    if driver_present() && nvrtc_present() {
        // A GPU machine: the weights are checked before anything is uploaded.
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    } else if !driver_present() {
        assert!(matches!(err, Error::NoDriver), "{err}");
        assert!(err.to_string().contains("libcuda.so.1"), "{err}");
    } else {
        assert!(matches!(err, Error::NoNvrtc), "{err}");
    }
}
