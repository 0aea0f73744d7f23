//! kiln-init is PID 1 of a kiln system, in three parts:
//!
//! - `boot`: a read-only view of the initramfs, the kernel file systems, modules, host name and
//!   loopback;
//! - `supervision`: the containers kiln build laid out under /containers, each run through
//!   kiln-runtime's lifecycle (and cleaned up after): `onboot` in order, `services`
//!   concurrently, restarted by their policy (`services`), `onshutdown` at power-off (SIGTERM,
//!   SIGUSR2, SIGPWR or the ACPI power button; ctrl-alt-del reboots); it also reaps orphans;
//! - `control`: the `kiln-ctl` socket, typed commands included `wait` for a service's state.
//!
//! The same program is the control client (`kiln-ctl list`, also as a container's PID 1) and
//! the kernel's modprobe helper. Kernel command-line switches: see `cmdline`.
//!
//! Built static (`-C target-feature=+crt-static`) so that it needs nothing from the image.

mod boot;
mod cmdline;
mod control;
mod modules;
mod power_button;
mod readonly_root;
mod root_device;
mod services;
mod supervision;

fn log(msg: &str) {
    println!("kiln-init: {msg}");
}

/// The kernel runs its modprobe helper as `HELPER -q -- MODULE`.
fn modprobe_helper(args: &[String]) -> std::process::ExitCode {
    let Some(wanted) = args.iter().skip(1).find(|a| !a.starts_with('-')) else {
        return std::process::ExitCode::FAILURE;
    };
    match modules::Modules::open().map(|mut m| m.load_wanted(wanted)) {
        Some(Ok(())) => std::process::ExitCode::SUCCESS,
        Some(Err(e)) => {
            if !args.iter().any(|a| a == "-q") {
                eprintln!("modprobe: {e}");
            }
            std::process::ExitCode::FAILURE
        }
        None => std::process::ExitCode::FAILURE,
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args
        .get(1)
        .is_some_and(|a| control::COMMANDS.contains(&a.as_str()))
    {
        return control::client(&args[1..]);
    }
    if std::process::id() != 1 {
        return modprobe_helper(&args);
    }
    // Before any thread starts, so that every thread has them blocked.
    let signals = supervision::block_signals();
    let booted = boot::boot();
    let requests = match control::listen() {
        Ok(rx) => Some(rx),
        Err(e) => {
            log(&format!("control socket {}: {e}", control::SOCKET));
            None
        }
    };
    supervision::Supervisor::new(signals, requests, cmdline::Switches::read(), booted.devices).run()
}
