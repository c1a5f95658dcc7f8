//! Compiles `chat/v1/*.proto` with `protox` (no system `protoc`), generates the
//! tonic/prost code from the descriptor set, and writes the encoded set to
//! `OUT_DIR` so the servers can offer it through reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "chat/v1/discovery.proto",
    "chat/v1/peer.proto",
    "chat/v1/control.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("chat_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
