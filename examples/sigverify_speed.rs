//! Measures signature checks per second (ring through `signature::PublicKey`), for the
//! crate choice in docs/design.md: `cargo run --example sigverify_speed DIR` where DIR holds
//! ec.pub, ec.sig, ed.pub, ed.sig and payload (made with openssl).
use std::time::Instant;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("DIR"));
    let payload = std::fs::read(dir.join("payload")).unwrap();
    for k in ["ec", "ed"] {
        let key = ocibundle::signature::PublicKey::from_file(&dir.join(format!("{k}.pub"))).unwrap();
        let sig = std::fs::read(dir.join(format!("{k}.sig"))).unwrap();
        assert!(key.verifies(&payload, &sig));
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            assert!(key.verifies(&payload, &sig));
        }
        let per = t.elapsed().as_secs_f64() / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            ocibundle::signature::PublicKey::from_file(&dir.join(format!("{k}.pub"))).unwrap();
        }
        let parse = t.elapsed().as_secs_f64() / n as f64;
        println!("{k}: verify {:.1} µs, key file read+parse {:.1} µs", per * 1e6, parse * 1e6);
    }
}
