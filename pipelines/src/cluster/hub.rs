//! One port per process for every dataflow of a `wharf run` cluster.
//!
//! `wharf sync` across processes builds one dataflow, so each process listens on its hostfile
//! address for that one dataflow's connections ([`ClusterSpec::allocators`]). A service runs a
//! dataflow per sync, started and rebuilt when process 0 decides (a config reload, a failed
//! run), so its processes keep one listener each, a [`Hub`], and tag every connection with the
//! dataflow it belongs to:
//!
//! - each other process holds a *control* connection to process 0, made again whenever it
//!   breaks (process 0 restarted);
//! - to start a sync's dataflow, process 0 sends `start <tag> <config hash>` on every control
//!   connection ([`Hub::announce`]); each process answers by joining, or `refuse <tag>
//!   <reason>` (its config file differs, or the sync cannot be built there);
//! - the dataflow's own connections are made as timely's cluster start makes them, each
//!   process connecting to those before it, but through the hubs and tagged
//!   ([`Hub::connect_tagged`]), then handed to timely.
//!
//! Tags are `<sync>#<process 0's start>.<n>`: a connection of a dataflow that failed is never
//! taken for a later one's.
//!
//! [`ClusterSpec::allocators`]: super::ClusterSpec::allocators

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first bytes of every hub connection.
const MAGIC: &[u8; 6] = b"WHARF1";
const DATA: u8 = 0;
const CONTROL: u8 = 1;

/// A dataflow process 0 asked this process to join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// The dataflow's tag: the sync's name, `#`, a number unique to this dataflow.
    pub tag: String,
    /// What process 0 says of its config (a hash of it), for each process to compare.
    pub config_hash: String,
}

impl Start {
    /// The sync the dataflow runs.
    pub fn sync(&self) -> &str {
        self.tag.rsplit_once('#').map_or(&self.tag, |(s, _)| s)
    }
}

#[derive(Default)]
struct HubState {
    /// Dataflow connections that arrived, by tag and the process that made them.
    arrived: HashMap<(String, usize), TcpStream>,
    /// Process 0: every other process's control connection. Others: theirs to process 0.
    controls: Vec<Option<TcpStream>>,
    /// Process 0: why a process refused a dataflow, by tag.
    refused: HashMap<String, String>,
}

/// A process's one listener for all the dataflows of a service cluster (see the module).
pub struct Hub {
    process: usize,
    addresses: Vec<String>,
    connect_within: Duration,
    state: Mutex<HubState>,
    changed: Condvar,
    /// Process 0: dataflows announced, and when it started (part of each tag).
    announced: AtomicU64,
    boot: u64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("process", &self.process)
            .field("addresses", &self.addresses)
            .finish()
    }
}

fn header(kind: u8, from: usize, tag: &str) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.push(kind);
    h.extend_from_slice(&(from as u64).to_be_bytes());
    h.extend_from_slice(&(tag.len() as u16).to_be_bytes());
    h.extend_from_slice(tag.as_bytes());
    h
}

fn read_header(stream: &mut TcpStream) -> std::io::Result<(u8, usize, String)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut fixed = [0u8; 17];
    stream.read_exact(&mut fixed)?;
    if &fixed[..6] != MAGIC {
        return Err(bad("not a wharf cluster connection"));
    }
    let from = u64::from_be_bytes(fixed[7..15].try_into().map_err(|_| bad("header"))?) as usize;
    let len = u16::from_be_bytes([fixed[15], fixed[16]]) as usize;
    let mut tag = vec![0u8; len];
    stream.read_exact(&mut tag)?;
    stream.set_read_timeout(None)?;
    let tag = String::from_utf8(tag).map_err(|_| bad("a tag that is not UTF-8"))?;
    Ok((fixed[6], from, tag))
}

/// One line of the control protocol, its fields free of tabs and line breaks.
fn line(fields: &[&str]) -> String {
    let clean: Vec<String> = fields
        .iter()
        .map(|f| f.replace(['\t', '\n', '\r'], " "))
        .collect();
    format!("{}\n", clean.join("\t"))
}

impl Hub {
    /// Listens on this process's address and takes every hub connection made to it.
    pub fn bind(
        process: usize,
        addresses: Vec<String>,
        connect_within: Duration,
    ) -> Result<Arc<Hub>, String> {
        let listen = addresses
            .get(process)
            .ok_or_else(|| format!("no address for process {process}"))?
            .clone();
        let listener = TcpListener::bind(&listen)
            .map_err(|e| format!("process {process} cannot listen on {listen}: {e}"))?;
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let hub = Arc::new(Hub {
            process,
            state: Mutex::new(HubState {
                controls: addresses.iter().map(|_| None).collect(),
                ..HubState::default()
            }),
            addresses,
            connect_within,
            changed: Condvar::new(),
            announced: AtomicU64::new(0),
            boot,
        });
        let taker = hub.clone();
        std::thread::Builder::new()
            .name("wharf-hub".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let hub = taker.clone();
                    let _ = std::thread::Builder::new()
                        .name("wharf-hub-conn".into())
                        .spawn(move || hub.take(stream));
                }
            })
            .map_err(|e| format!("cannot start the cluster's listener thread: {e}"))?;
        Ok(hub)
    }

    /// This process's number.
    pub fn process(&self) -> usize {
        self.process
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (until `deadline`) for `ready` to give something, re-checking whenever the hub's
    /// state changes.
    fn wait_for<T>(
        &self,
        deadline: Instant,
        mut ready: impl FnMut(&mut HubState) -> Option<T>,
    ) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(t) = ready(&mut st) {
                return Some(t);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = self
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// A connection made to this process: a dataflow's, or (process 0) a control one.
    fn take(self: Arc<Self>, mut stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (kind, from, tag) = match read_header(&mut stream) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(from = %peer, "a connection to the cluster's port refused: {e}");
                return;
            }
        };
        if from >= self.addresses.len() || from == self.process {
            tracing::warn!(from = %peer, process = from, "a connection from a process this cluster does not have: start every process with the same hostfile");
            return;
        }
        let _ = stream.set_nodelay(true);
        match kind {
            DATA => {
                self.lock().arrived.insert((tag, from), stream);
                self.changed.notify_all();
            }
            CONTROL if self.process == 0 => {
                let Ok(reader) = stream.try_clone() else {
                    return;
                };
                self.lock().controls[from] = Some(stream);
                self.changed.notify_all();
                tracing::info!(process = from, "a cluster process is connected");
                for l in BufReader::new(reader).lines() {
                    let Ok(l) = l else { break };
                    let mut f = l.splitn(3, '\t');
                    if let (Some("refuse"), Some(tag), Some(reason)) =
                        (f.next(), f.next(), f.next())
                    {
                        tracing::warn!(process = from, dataflow = tag, "{reason}");
                        self.lock()
                            .refused
                            .insert(tag.to_string(), format!("process {from}: {reason}"));
                        self.changed.notify_all();
                    }
                }
                tracing::warn!(process = from, "a cluster process disconnected");
            }
            _ => tracing::warn!(from = %peer, "an unknown cluster connection"),
        }
    }

    /// Process 0: asks every other process to join a new dataflow of `sync`, in which process
    /// 0's config file hashes to `config_hash`; returns its tag. Waits up to the connect
    /// time for a process whose control connection is not there (not started, or restarting).
    pub fn announce(&self, sync: &str, config_hash: &str) -> Result<String, String> {
        let n = self.announced.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{sync}#{:x}.{n}", self.boot);
        let message = line(&["start", &tag, config_hash]);
        let deadline = Instant::now() + self.connect_within;
        for i in 1..self.addresses.len() {
            let sent = self.wait_for(deadline, |st| {
                let control = st.controls[i].as_mut()?;
                match control.write_all(message.as_bytes()) {
                    Ok(()) => Some(()),
                    Err(_) => {
                        st.controls[i] = None;
                        None
                    }
                }
            });
            if sent.is_none() {
                return Err(format!(
                    "process {i} ({}) is not connected to process 0 (waited {:?}): start it with \
                     `wharf run` with the same config, --processes {}, --process {i} and the \
                     same --hostfile",
                    self.addresses[i],
                    self.connect_within,
                    self.addresses.len()
                ));
            }
        }
        Ok(tag)
    }

    /// The connections of the dataflow `tag`, in process order (`None` for this process):
    /// made to every process before this one, taken from every process after it.
    pub fn connect_tagged(&self, tag: &str) -> Result<Vec<Option<TcpStream>>, String> {
        let me = self.process;
        let deadline = Instant::now() + self.connect_within;
        let mut sockets: Vec<Option<TcpStream>> = self.addresses.iter().map(|_| None).collect();
        for (i, address) in self.addresses.iter().enumerate().take(me) {
            let stream = loop {
                match TcpStream::connect(address) {
                    Ok(mut s) => {
                        s.write_all(&header(DATA, me, tag))
                            .map_err(|e| format!("process {i} at {address}: {e}"))?;
                        break s;
                    }
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("process {i} at {address}: {e}"));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            let _ = stream.set_nodelay(true);
            sockets[i] = Some(stream);
        }
        for (i, slot) in sockets.iter_mut().enumerate().skip(me + 1) {
            let key = (tag.to_string(), i);
            let taken = self.wait_for(deadline, |st| {
                if let Some(reason) = st.refused.remove(tag) {
                    return Some(Err(reason));
                }
                st.arrived.remove(&key).map(Ok)
            });
            match taken {
                Some(Ok(stream)) => *slot = Some(stream),
                Some(Err(reason)) => {
                    self.forget(tag);
                    return Err(format!("the cluster refused the dataflow: {reason}"));
                }
                None => {
                    self.forget(tag);
                    return Err(format!(
                        "process {i} ({}) did not join the dataflow within {:?}",
                        self.addresses[i], self.connect_within
                    ));
                }
            }
        }
        tracing::info!(process = me, dataflow = tag, "cluster dataflow connected");
        Ok(sockets)
    }

    /// Drops what arrived for a dataflow that will not start.
    fn forget(&self, tag: &str) {
        let mut st = self.lock();
        st.arrived.retain(|(t, _), _| t != tag);
        st.refused.remove(tag);
    }

    /// A process other than 0: keeps a control connection to process 0 (made again whenever
    /// it breaks) and hands on every dataflow process 0 announces.
    pub fn follow_announcements(self: &Arc<Self>) -> Result<Receiver<Start>, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let hub = self.clone();
        std::thread::Builder::new()
            .name("wharf-hub-control".into())
            .spawn(move || hub.control_loop(tx))
            .map_err(|e| format!("cannot start the cluster's control thread: {e}"))?;
        Ok(rx)
    }

    fn control_loop(&self, tx: Sender<Start>) {
        let leader = self.addresses[0].clone();
        let mut said = false;
        loop {
            let mut stream = match TcpStream::connect(&leader) {
                Ok(s) => s,
                Err(e) => {
                    if !said {
                        tracing::info!(
                            process = self.process,
                            "waiting for process 0 at {leader}: {e}"
                        );
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                    continue;
                }
            };
            if stream
                .write_all(&header(CONTROL, self.process, ""))
                .is_err()
            {
                continue;
            }
            let Ok(reader) = stream.try_clone() else {
                continue;
            };
            self.lock().controls[0] = Some(stream);
            tracing::info!(process = self.process, "connected to process 0 at {leader}");
            said = false;
            for l in BufReader::new(reader).lines() {
                let Ok(l) = l else { break };
                let mut f = l.split('\t');
                if let (Some("start"), Some(tag), Some(hash)) = (f.next(), f.next(), f.next()) {
                    let start = Start {
                        tag: tag.to_string(),
                        config_hash: hash.to_string(),
                    };
                    if tx.send(start).is_err() {
                        return;
                    }
                }
            }
            self.lock().controls[0] = None;
            tracing::warn!(
                process = self.process,
                "lost process 0 at {leader}; connecting again"
            );
        }
    }

    /// A process other than 0: tells process 0 why it cannot join the dataflow `tag`.
    pub fn refuse(&self, tag: &str, reason: &str) {
        let message = line(&["refuse", tag, reason]);
        if let Some(control) = self.lock().controls[0].as_mut() {
            let _ = control.write_all(message.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_address() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[test]
    fn three_processes_connect_a_dataflow_process_0_announced_and_refusals_reach_it() {
        let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
        let within = Duration::from_secs(10);
        let hubs: Vec<Arc<Hub>> = (0..3)
            .map(|p| Hub::bind(p, addresses.clone(), within).unwrap())
            .collect();
        let followers: Vec<_> = (1..3)
            .map(|p| {
                let hub = hubs[p].clone();
                let starts = hub.follow_announcements().unwrap();
                std::thread::spawn(move || {
                    let start = starts.recv().unwrap();
                    assert_eq!(start.sync(), "s");
                    assert_eq!(start.config_hash, "h");
                    let sockets = hub.connect_tagged(&start.tag).unwrap();
                    let second = starts.recv().unwrap();
                    if p == 2 {
                        hub.refuse(&second.tag, "its config\tdiffers");
                    }
                    sockets.iter().filter(|s| s.is_some()).count()
                })
            })
            .collect();
        let tag = hubs[0].announce("s", "h").unwrap();
        let sockets = hubs[0].connect_tagged(&tag).unwrap();
        assert!(sockets[0].is_none() && sockets[1].is_some() && sockets[2].is_some());
        let tag = hubs[0].announce("s", "h").unwrap();
        let refused = hubs[0].connect_tagged(&tag).unwrap_err();
        assert!(
            refused.contains("process 2: its config differs"),
            "{refused}"
        );
        for f in followers {
            assert_eq!(f.join().unwrap(), 2);
        }
    }

    #[test]
    fn a_process_that_never_comes_is_named() {
        let addresses: Vec<String> = (0..2).map(|_| free_address()).collect();
        let hub = Hub::bind(0, addresses.clone(), Duration::from_millis(300)).unwrap();
        let e = hub.announce("s", "h").unwrap_err();
        assert!(e.contains(&format!("process 1 ({})", addresses[1])), "{e}");
    }
}
