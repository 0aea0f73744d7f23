//! The control socket and its client, `kiln-ctl` (this same program, bound at [`CLIENT`] so that
//! containers binding /run can run it):
//!
//! ```text
//! kiln-ctl list                      one line per service: state, restarts, policy
//! kiln-ctl start|stop|restart NAME   stop holds a service (no restarts) until it is started
//! kiln-ctl logs NAME                 the container's output so far (/var/log/NAME.log)
//! kiln-ctl wait NAME STATE [--timeout S]
//!                                    until the service is in STATE (default timeout 60 s):
//!                                    running;  exited (its process ended, a restart may be
//!                                    pending);  stopped (not running and nothing pending:
//!                                    ended for good, or held by `stop`)
//! ```
//!
//! A request is parsed once into a [`Command`], by the client from its arguments and by
//! kiln-init from the line the client sends. `logs` is answered by the listening thread; the
//! rest go to the supervisor (which owns the services), woken by a SIGCHLD. Answers starting
//! with `error:` make the client exit with 1; usage errors exit with 2.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fmt;
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
/// The words that make this program the client (its first argument).
pub const COMMANDS: &[&str] = &["list", "start", "stop", "restart", "logs", "wait"];
/// How long `wait` waits unless told.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// How long the client waits for any other answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A state `kiln-ctl wait` can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitState {
    /// The service's process is running.
    Running,
    /// Its process has ended (a restart may be pending).
    Exited,
    /// It is not running and nothing is pending: it ended for good or was stopped.
    Stopped,
}

impl WaitState {
    fn parse(s: &str) -> Result<WaitState, String> {
        match s {
            "running" => Ok(WaitState::Running),
            "exited" => Ok(WaitState::Exited),
            "stopped" => Ok(WaitState::Stopped),
            other => Err(format!(
                "unknown state {other:?}; use running, exited or stopped"
            )),
        }
    }
}

impl fmt::Display for WaitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitState::Running => "running",
            WaitState::Exited => "exited",
            WaitState::Stopped => "stopped",
        })
    }
}

/// A control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// List the services.
    List,
    /// Start a service (and release a stopped one).
    Start(String),
    /// Stop a service and hold it.
    Stop(String),
    /// Restart a service.
    Restart(String),
    /// A container's output so far.
    Logs(String),
    /// Wait until a service reaches a state.
    Wait {
        /// The service.
        name: String,
        /// The state.
        state: WaitState,
        /// How long to wait.
        timeout: Duration,
    },
}

impl Command {
    /// Parse the words of a command (the client's arguments, or a line from the socket).
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Command, String> {
        let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        let name = |rest: &[&str]| match rest {
            [] => Err("needs a service name".to_string()),
            [name] => name_ok(name),
            _ => Err(format!("takes one service name, not {:?}", rest.join(" "))),
        };
        let (verb, rest) = words
            .split_first()
            .ok_or_else(|| format!("no command; use one of {}", COMMANDS.join(", ")))?;
        let within = |e: String| format!("{verb}: {e}");
        match *verb {
            "list" if rest.is_empty() => Ok(Command::List),
            "list" => Err(within("takes no arguments".into())),
            "start" => name(rest).map(Command::Start).map_err(within),
            "stop" => name(rest).map(Command::Stop).map_err(within),
            "restart" => name(rest).map(Command::Restart).map_err(within),
            "logs" => name(rest).map(Command::Logs).map_err(within),
            "wait" => {
                let mut timeout = DEFAULT_WAIT;
                let mut plain = Vec::new();
                let mut it = rest.iter();
                while let Some(w) = it.next() {
                    let value = match w.strip_prefix("--timeout") {
                        Some("") => it.next().copied(),
                        Some(v) if v.starts_with('=') => Some(&v[1..]),
                        _ => {
                            plain.push(*w);
                            continue;
                        }
                    };
                    let secs = value
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
                        .ok_or_else(|| {
                            within("--timeout needs seconds (0 to 86400)".to_string())
                        })?;
                    timeout = Duration::from_secs_f64(secs);
                }
                let [name, state] = plain[..] else {
                    return Err(within("usage: wait NAME STATE [--timeout S]".into()));
                };
                Ok(Command::Wait {
                    name: name_ok(name).map_err(within)?,
                    state: WaitState::parse(state).map_err(within)?,
                    timeout,
                })
            }
            other => Err(format!(
                "unknown command {other:?}; use one of {}",
                COMMANDS.join(", ")
            )),
        }
    }

    /// The line the client sends (parsed back by [`Command::parse`]).
    pub fn to_line(&self) -> String {
        match self {
            Command::List => "list".into(),
            Command::Start(n) => format!("start {n}"),
            Command::Stop(n) => format!("stop {n}"),
            Command::Restart(n) => format!("restart {n}"),
            Command::Logs(n) => format!("logs {n}"),
            Command::Wait {
                name,
                state,
                timeout,
            } => format!("wait {name} {state} --timeout {}", timeout.as_secs_f64()),
        }
    }

    /// How long the client waits for the answer.
    fn answer_timeout(&self) -> Duration {
        match self {
            // The supervisor answers at the deadline at the latest; a little more for the way.
            Command::Wait { timeout, .. } => *timeout + Duration::from_secs(2),
            _ => ANSWER_TIMEOUT,
        }
    }
}

fn name_ok(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('/') {
        Err(format!("{name:?} is not a service name"))
    } else {
        Ok(name.to_string())
    }
}

/// A request for the supervisor; the answer goes back on `reply`.
pub struct Request {
    /// What is asked.
    pub command: Command,
    /// Where the answer goes (one answer, ending with a newline; `error: ...` for a failure).
    pub reply: mpsc::Sender<String>,
}

/// Listen on [`SOCKET`], and make the client available at [`CLIENT`]; requests reach the
/// supervisor through the returned receiver.
pub fn listen() -> std::io::Result<mpsc::Receiver<Request>> {
    fs::create_dir_all("/run/kiln")?;
    let _ = fs::remove_file(SOCKET);
    let listener = UnixListener::bind(SOCKET)?;
    fs::set_permissions(SOCKET, fs::Permissions::from_mode(0o600))?;
    // The client is this program; containers that bind /run find it there.
    let _ = fs::File::create(CLIENT);
    let _ = nix::mount::mount(
        Some("/proc/self/exe"),
        CLIENT,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    );
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
    let words: Vec<&str> = line.split_whitespace().collect();
    let answer = match Command::parse(&words) {
        Err(e) => format!("error: {e}\n"),
        Ok(Command::Logs(name)) => logs(&name),
        Ok(command) => {
            let timeout = command.answer_timeout();
            let (reply, answer) = mpsc::channel();
            if tx.send(Request { command, reply }).is_ok() {
                let _ = kill(Pid::this(), Signal::SIGCHLD);
            }
            answer
                .recv_timeout(timeout)
                .unwrap_or_else(|_| "error: no answer from kiln-init\n".into())
        }
    };
    let _ = conn.write_all(answer.as_bytes());
}

fn logs(name: &str) -> String {
    let path = format!("/var/log/{name}.log");
    fs::read_to_string(&path).unwrap_or_else(|e| format!("error: {path}: {e}\n"))
}

/// The client: `kiln-ctl COMMAND [ARGS]`.
pub fn client(args: &[String]) -> ExitCode {
    let command = match Command::parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln-ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let answer = UnixStream::connect(SOCKET).and_then(|mut s| {
        s.set_read_timeout(Some(command.answer_timeout() + Duration::from_secs(1)))?;
        s.write_all(format!("{}\n", command.to_line()).as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, String> {
        Command::parse(&line.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn commands_parse_and_round_trip() {
        let cases = [
            Command::List,
            Command::Start("redis".into()),
            Command::Stop("redis".into()),
            Command::Restart("redis".into()),
            Command::Logs("dhcp".into()),
            Command::Wait {
                name: "redis".into(),
                state: WaitState::Exited,
                timeout: Duration::from_millis(2500),
            },
        ];
        for c in cases {
            assert_eq!(parse(&c.to_line()), Ok(c.clone()), "{}", c.to_line());
        }
        assert_eq!(
            parse("wait db running"),
            Ok(Command::Wait {
                name: "db".into(),
                state: WaitState::Running,
                timeout: DEFAULT_WAIT
            })
        );
        assert_eq!(
            parse("wait --timeout=5 db stopped"),
            Ok(Command::Wait {
                name: "db".into(),
                state: WaitState::Stopped,
                timeout: Duration::from_secs(5)
            })
        );
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        for (line, says) in [
            ("", "no command"),
            ("fly", "unknown command \"fly\""),
            ("stop", "stop: needs a service name"),
            ("stop a b", "takes one service name"),
            ("logs ../etc", "logs: \"../etc\" is not a service name"),
            ("list x", "list: takes no arguments"),
            ("wait db", "usage: wait NAME STATE"),
            ("wait db sleeping", "unknown state \"sleeping\""),
            ("wait db running --timeout", "--timeout needs seconds"),
            ("wait db running --timeout -1", "--timeout needs seconds"),
            ("wait db running --timeout x", "--timeout needs seconds"),
        ] {
            let e = parse(line).expect_err(line);
            assert!(e.contains(says), "{line:?}: {e}");
        }
    }
}
