//! The cost of the cryptography alone: one seal plus one open of a payload
//! on a Noise session, on one core, in the [7/8] stage.

use std::time::{Duration, Instant};

use crate::report::row;

/// Seals and opens `payload` bytes 200,000 times on a fresh session;
/// prints the row and returns the time of one seal plus one open.
pub fn seal_open(payload: usize) -> anyhow::Result<Duration> {
    let a = chat_noise::StaticKeypair::generate();
    let bkp = chat_noise::StaticKeypair::generate();
    let (m1, w) = chat_noise::Initiator::new(&a, bkp.public_key(), b"bench").write_message(b"")?;
    let pending = chat_noise::Responder::read_message(&bkp, b"bench", &m1)?;
    let (m2, tr) = pending.write_message(b"")?;
    let (_, ti) = w.read_message(&m2)?;
    let plaintext = vec![9u8; payload];
    let n = 200_000;
    let t0 = Instant::now();
    for i in 0..n {
        let c = ti.seal(i, b"aad", &plaintext)?;
        tr.open(i, b"aad", &c)?;
    }
    let per = t0.elapsed() / n as u32;
    row(
        &format!("seal+open {payload} B, µs (one core)"),
        format!("{:.2}", per.as_secs_f64() * 1e6),
        "-".into(),
        "-".into(),
    );
    Ok(per)
}
