//! Kernel command-line switches for debugging a system without rebuilding it (add them with
//! `kiln run qemu --append`):
//! - `kiln.skip=NAME[,NAME...]`: do not run these onboot, service or onshutdown containers;
//! - `kiln.norestart`: run every service once, whatever its restart policy;
//! - `kiln.debug`: log each container's start with its command and pid.

use std::fs;

/// The switches present on the command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Switches {
    /// Containers not to run.
    pub skip: Vec<String>,
    /// Ignore restart policies.
    pub no_restart: bool,
    /// Log more.
    pub debug: bool,
}

impl Switches {
    /// The switches of this boot (/proc/cmdline, read once).
    pub fn read() -> &'static Switches {
        static SWITCHES: std::sync::OnceLock<Switches> = std::sync::OnceLock::new();
        SWITCHES.get_or_init(|| {
            Switches::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default())
        })
    }

    /// Parse a kernel command line.
    pub fn parse(cmdline: &str) -> Switches {
        let mut s = Switches::default();
        for word in cmdline.split_whitespace() {
            match word.split_once('=') {
                Some(("kiln.skip", names)) => s.skip.extend(
                    names
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string),
                ),
                None if word == "kiln.norestart" => s.no_restart = true,
                None if word == "kiln.debug" => s.debug = true,
                _ => {}
            }
        }
        s
    }

    /// Whether the container `name` is to be skipped.
    pub fn skips(&self, name: &str) -> bool {
        self.skip.iter().any(|s| s == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_parsed() {
        let s = Switches::parse("console=ttyS0 kiln.skip=dhcp,getty quiet kiln.debug");
        assert_eq!(s.skip, ["dhcp", "getty"]);
        assert!(s.debug && !s.no_restart);
        assert!(s.skips("dhcp") && !s.skips("redis"));
        assert!(Switches::parse("kiln.norestart").no_restart);
        assert_eq!(Switches::parse("root=/dev/sda"), Switches::default());
    }
}
