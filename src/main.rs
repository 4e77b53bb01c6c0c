//! The `roundhouse` command: flags → validated config → running balancer. A startup
//! mistake prints one line naming the flag and exits 2.

use std::process::ExitCode;

use roundhouse::{Config, cli};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = match cli::parse(&args)
        .map_err(|exit| (exit.text, exit.code))
        .and_then(|args| Config::from_cli(args).map_err(|msg| (msg, 2)))
    {
        Ok(config) => config,
        Err((text, 0)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err((text, code)) => {
            eprintln!("roundhouse: {text}");
            return ExitCode::from(code as u8);
        }
    };
    let backends: Vec<String> = config
        .backends
        .iter()
        .map(|b| match b.weight.get() {
            1 => b.addr.to_string(),
            w => format!("{} (weight {w})", b.addr),
        })
        .collect();
    let running = match roundhouse::start(config.clone()) {
        Ok(running) => running,
        Err(err) => {
            eprintln!("roundhouse: cannot listen on {}: {err}", config.listen);
            return ExitCode::from(2);
        }
    };
    println!(
        "roundhouse listening on http://{}, {} over {}{}",
        running.local_addr(),
        config.strategy.name(),
        backends.join(", "),
        if config.default_backends {
            " (the default backends; use --backend to choose)"
        } else {
            ""
        },
    );
    running.wait();
    ExitCode::SUCCESS
}
