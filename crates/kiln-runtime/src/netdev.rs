//! What runtime.json asks of the host once a container's namespaces exist and before it runs:
//! network interfaces created and moved into its network namespace (`interfaces`), and its
//! namespaces bound to paths for other containers to join (`bindNS`). Interfaces are made over
//! rtnetlink.

use crate::RuntimeError;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::mount::{MsFlags, mount};
use serde_json::Value;
use std::fs;
use std::io;
use std::path::PathBuf;

/// One entry of runtime.json's `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The interface's name in the container.
    pub name: String,
    /// What to create: `veth` (a pair, `name` in the container and `peer` left on the host),
    /// or empty to move an existing host interface `name` in.
    pub add: String,
    /// The host end of a veth pair.
    pub peer: String,
}

impl Interface {
    /// The entries of a runtime.json `interfaces` array.
    pub fn from_json(v: &Value) -> Result<Vec<Interface>, RuntimeError> {
        let mut out = Vec::new();
        for i in v.as_array().into_iter().flatten() {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            let iface = Interface {
                name: s("name"),
                add: s("add"),
                peer: s("peer"),
            };
            if iface.name.is_empty() {
                return Err(RuntimeError::Config(format!(
                    "interface without a name: {i}"
                )));
            }
            match iface.add.as_str() {
                "" => {}
                "veth" if !iface.peer.is_empty() => {}
                "veth" => {
                    return Err(RuntimeError::Config(format!(
                        "veth interface {}: needs a peer name",
                        iface.name
                    )));
                }
                other => {
                    return Err(RuntimeError::Config(format!(
                        "interface {}: cannot add {other:?} (only veth)",
                        iface.name
                    )));
                }
            }
            out.push(iface);
        }
        Ok(out)
    }
}

fn net_err(what: String) -> impl FnOnce(io::Error) -> RuntimeError {
    move |source| RuntimeError::Network { what, source }
}

/// Send one rtnetlink request and wait for its acknowledgement.
fn request(socket: &Socket, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let (reply, _) = socket.recv_from_full()?;
    let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| io::Error::other(e.to_string()))?;
    match answer.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
        },
        _ => Ok(()),
    }
}

fn route_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn if_index(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Create or move the interfaces into the network namespace of process `pid`.
pub fn setup_interfaces(pid: u32, interfaces: &[Interface]) -> Result<(), RuntimeError> {
    if interfaces.is_empty() {
        return Ok(());
    }
    let socket = route_socket().map_err(net_err("opening an rtnetlink socket".into()))?;
    for iface in interfaces {
        if iface.add == "veth" {
            let mut peer = LinkMessage::default();
            peer.attributes
                .push(LinkAttribute::IfName(iface.peer.clone()));
            let mut link = LinkMessage::default();
            link.attributes
                .push(LinkAttribute::IfName(iface.name.clone()));
            link.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]));
            request(
                &socket,
                RouteNetlinkMessage::NewLink(link),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(net_err(format!(
                "creating veth pair {} / {}",
                iface.name, iface.peer
            )))?;
        }
        let what = || {
            format!(
                "moving interface {} into the container of pid {pid}",
                iface.name
            )
        };
        let index = if_index(&iface.name).map_err(net_err(what()))?;
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::NetNsPid(pid));
        request(&socket, RouteNetlinkMessage::SetLink(link), 0).map_err(net_err(what()))?;
    }
    Ok(())
}

/// Bind the namespaces of process `pid` to the paths of runtime.json's `bindNS`: each kind
/// as /proc/PID/ns names it (`net`, `ipc`, `uts`, `mnt`, `pid`, `cgroup`, `user`) with its
/// path. `pid` is the container's process, not the runtime's intermediate one.
pub fn bind_namespaces(pid: u32, bind_ns: &[(&str, PathBuf)]) -> Result<(), RuntimeError> {
    for (kind, target) in bind_ns {
        if !matches!(
            *kind,
            "pid" | "net" | "ipc" | "uts" | "mnt" | "cgroup" | "user"
        ) {
            return Err(RuntimeError::Config(format!(
                "bindNS: unknown namespace {kind:?}"
            )));
        }
        let source = format!("/proc/{pid}/ns/{kind}");
        let what = || format!("binding {source} to {}", target.display());
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(net_err(what()))?;
        }
        if !target.exists() {
            fs::File::create(target).map_err(net_err(what()))?;
        }
        let none: Option<&str> = None;
        mount(Some(source.as_str()), target, none, MsFlags::MS_BIND, none)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
            .map_err(net_err(what()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_checked() {
        let ok = Interface::from_json(&serde_json::json!([
            {"name": "eth1", "add": "veth", "peer": "veth-app", "createInRoot": true},
            {"name": "wlan0"}
        ]))
        .expect("valid");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].peer, "veth-app");
        let err = Interface::from_json(&serde_json::json!([{"name": "x", "add": "veth"}]))
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("needs a peer"), "{err}");
        let err = Interface::from_json(&serde_json::json!([{"name": "x", "add": "bridge"}]))
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("only veth"), "{err}");
    }
}
