//! The control socket and its client. kiln-init listens on [`SOCKET`]; `kiln-ctl` (this same
//! program, bound at [`CLIENT`] so that containers binding /run can run it) sends one line,
//! `list`, `start NAME`, `stop NAME`, `restart NAME` or `logs NAME`, and prints the answer.
//! `logs` is answered from /var/log by the listening thread; the rest go to the main loop,
//! which owns the services, woken by a SIGCHLD.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;
use std::{fs, thread};

/// Where kiln-init listens (root only).
pub const SOCKET: &str = "/run/kiln/control.sock";
/// Where the client is found in the guest.
pub const CLIENT: &str = "/run/kiln/kiln-ctl";
/// The commands the client accepts.
pub const COMMANDS: &[&str] = &["list", "start", "stop", "restart", "logs"];

/// A request for the main loop; the answer goes back on `reply`.
pub struct Request {
    /// `list`, `start`, `stop` or `restart`.
    pub command: String,
    /// The service (empty for `list`).
    pub name: String,
    /// Where the answer goes.
    pub reply: mpsc::Sender<String>,
}

/// Listen on [`SOCKET`]; requests reach the main loop through the returned receiver.
pub fn listen() -> std::io::Result<mpsc::Receiver<Request>> {
    fs::create_dir_all("/run/kiln")?;
    let _ = fs::remove_file(SOCKET);
    let listener = UnixListener::bind(SOCKET)?;
    fs::set_permissions(SOCKET, fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let tx = tx.clone();
            thread::spawn(move || serve(conn, &tx));
        }
    });
    Ok(rx)
}

fn serve(mut conn: UnixStream, tx: &mpsc::Sender<Request>) {
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default().to_string();
    let name = words.next().unwrap_or_default().to_string();
    let answer = match command.as_str() {
        "logs" => logs(&name),
        "list" | "start" | "stop" | "restart" => {
            let (reply, answer) = mpsc::channel();
            let sent = tx.send(Request {
                command,
                name,
                reply,
            });
            if sent.is_ok() {
                let _ = kill(Pid::this(), Signal::SIGCHLD);
            }
            answer
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| "error: kiln-init is busy (onboot still running?)\n".into())
        }
        other => format!(
            "error: unknown command {other:?}; use one of {}\n",
            COMMANDS.join(", ")
        ),
    };
    let _ = conn.write_all(answer.as_bytes());
}

fn logs(name: &str) -> String {
    if name.is_empty() || name.contains('/') {
        return "error: logs needs a container name\n".into();
    }
    let path = format!("/var/log/{name}.log");
    fs::read_to_string(&path).unwrap_or_else(|e| format!("error: {path}: {e}\n"))
}

/// The client: `kiln-ctl COMMAND [NAME]`.
pub fn client(args: &[String]) -> ExitCode {
    let request = args.join(" ");
    let answer = UnixStream::connect(SOCKET).and_then(|mut s| {
        s.write_all(format!("{request}\n").as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    });
    match answer {
        Ok(a) if a.starts_with("error:") => {
            eprint!("{a}");
            ExitCode::FAILURE
        }
        Ok(a) => {
            print!("{a}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {SOCKET}: {e}");
            ExitCode::FAILURE
        }
    }
}
