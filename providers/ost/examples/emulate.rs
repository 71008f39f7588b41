//! Run the OST emulator alone until Ctrl-C, as `docgate emulate ost` does:
//! `cargo run -p docgate-ost --example emulate -- [LISTEN] [DATA_DIR]`.

use std::{net::SocketAddr, path::PathBuf};

use docgate_ost::emulator::{self, EmulatorOptions};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let data_dir = PathBuf::from(args.next().unwrap_or_else(|| "./ost-emulator-data".into()));
    let emu = emulator::start(EmulatorOptions::new(listen, data_dir)).await?;
    println!("ost emulator listening on {}", emu.url());
    for line in emu.banner() {
        println!("{line}");
    }
    tokio::signal::ctrl_c().await?;
    emu.stop().await
}
