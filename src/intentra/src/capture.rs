//! A pcap writer for UDP datagrams, used by the daemon's `--capture FILE`.
//!
//! Owns the on-disk format of captures: classic pcap, little-endian, nanosecond
//! timestamps (magic 0xA1B23C4D), snapshot length 65535, link type LINKTYPE_RAW (101):
//! each record is a synthesized IPv4 or IPv6 header, a UDP header and the datagram.
//! Raw IP needs no invented MAC addresses and carries both address families; Wireshark,
//! tcpdump and `intentra-replay` all read it. Headers are built so that the capture
//! checks out: lengths are exact, the IPv4 header checksum and the UDP checksum (both
//! families; IPv4 could use 0 but a real one costs little and keeps tools quiet) are
//! computed. When one endpoint is IPv4 and the other IPv6, the IPv4 one is written as
//! its IPv4-mapped IPv6 address, as a dual-stack socket would see it.
//!
//! Also owns the capture's files: they are created new and private (`create_private`:
//! O_EXCL, O_NOFOLLOW, mode 0600), the capture rotates at a size limit (`CaptureLimits`),
//! and the key log beside it (`FILE.keylog`, PROTOCOL.md section 20) gets one line per key
//! set the endpoint installed, in the spirit of SSLKEYLOGFILE: transport keys only.
//!
//! `CaptureWriter` never allocates per record (headers are built in a fixed array) and never
//! does I/O beyond the writer it is given; nothing here knows the protocol's contents beyond
//! the key log's fields.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use intentra_proto::SessionSecrets;

/// LINKTYPE_RAW: the record data starts with an IP header.
pub const LINKTYPE_RAW: u32 = 101;
/// Largest record (IP header + UDP header + payload) written.
pub const SNAPLEN: usize = 65535;
const MAGIC_NANOS: u32 = 0xA1B2_3C4D;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
const RECORD_HEADER_LEN: usize = 16;
const MAX_HEADERS_LEN: usize = RECORD_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;
const IPPROTO_UDP: u8 = 17;
const TTL: u8 = 64;

/// Writes UDP datagrams to a pcap stream. Call `flush` (or drop) when done.
pub struct CaptureWriter<W: Write = BufWriter<File>> {
    out: W,
}

impl CaptureWriter<BufWriter<File>> {
    /// Creates `path` (a new file, mode 0600, see `create_private`) and writes the pcap
    /// file header.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = create_private(path.as_ref())?;
        CaptureWriter::from_writer(BufWriter::with_capacity(1 << 16, file))
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Writes the pcap file header to `out`; records follow. `out` should be buffered.
    pub fn from_writer(mut out: W) -> io::Result<Self> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay zero.
        header[16..20].copy_from_slice(&(SNAPLEN as u32).to_le_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
        out.write_all(&header)?;
        Ok(CaptureWriter { out })
    }

    /// Appends one datagram from `src` to `dst`, seen at `timestamp_ns` (nanoseconds
    /// since the Unix epoch). Fails with `InvalidInput` if the datagram cannot fit an
    /// IP packet within the snapshot length or the time is past 2106.
    pub fn record(
        &mut self,
        timestamp_ns: u64,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        let mut headers = [0u8; MAX_HEADERS_LEN];
        let len = build_headers(&mut headers, timestamp_ns, src, dst, payload)?;
        let headers = headers.get(..len).unwrap_or_default();
        self.out.write_all(headers)?;
        self.out.write_all(payload)
    }

    /// Writes everything buffered to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Writes the record, IP and UDP headers for `payload` into `out` and returns their
/// total length.
fn build_headers(
    out: &mut [u8; MAX_HEADERS_LEN],
    timestamp_ns: u64,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> io::Result<usize> {
    let (src_ip, dst_ip) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (Ip::V4(s), Ip::V4(d)),
        (s, d) => (Ip::V6(to_v6(s)), Ip::V6(to_v6(d))),
    };
    let ip_header_len = match src_ip {
        Ip::V4(_) => IPV4_HEADER_LEN,
        Ip::V6(_) => IPV6_HEADER_LEN,
    };
    let packet_len = ip_header_len + UDP_HEADER_LEN + payload.len();
    if packet_len > SNAPLEN {
        return Err(invalid("datagram too large for a capture record"));
    }
    let udp_len = (UDP_HEADER_LEN + payload.len()) as u16;
    let seconds = u32::try_from(timestamp_ns / 1_000_000_000)
        .map_err(|_| invalid("timestamp beyond pcap's 32-bit seconds"))?;
    let nanos = (timestamp_ns % 1_000_000_000) as u32;

    let (record, rest) = out.split_at_mut(RECORD_HEADER_LEN);
    record[0..4].copy_from_slice(&seconds.to_le_bytes());
    record[4..8].copy_from_slice(&nanos.to_le_bytes());
    record[8..12].copy_from_slice(&(packet_len as u32).to_le_bytes());
    record[12..16].copy_from_slice(&(packet_len as u32).to_le_bytes());

    let (ip, rest) = rest.split_at_mut(ip_header_len);
    let mut sum = Checksum::default();
    match (src_ip, dst_ip) {
        (Ip::V4(s), Ip::V4(d)) => {
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&(packet_len as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&[0, 0]);
            // Don't fragment: intentra never sends datagrams that need it.
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = TTL;
            ip[9] = IPPROTO_UDP;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let mut header_sum = Checksum::default();
            header_sum.add(ip);
            ip[10..12].copy_from_slice(&header_sum.finish().to_be_bytes());
            sum.add(&s.octets());
            sum.add(&d.octets());
        }
        (Ip::V6(s), Ip::V6(d)) => {
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            sum.add(&s.octets());
            sum.add(&d.octets());
        }
        // Both addresses were converted to the same family above.
        _ => return Err(invalid("mixed address families")),
    }
    // The rest of the pseudo-header: zero, protocol, UDP length.
    sum.add(&[0, IPPROTO_UDP]);
    sum.add(&udp_len.to_be_bytes());

    let udp = rest
        .get_mut(..UDP_HEADER_LEN)
        .ok_or_else(|| invalid("header buffer"))?;
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    sum.add(udp);
    sum.add(payload);
    // A computed zero is sent as all ones: zero means "no checksum" on the wire.
    let checksum = match sum.finish() {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    Ok(RECORD_HEADER_LEN + ip_header_len + UDP_HEADER_LEN)
}

#[derive(Clone, Copy)]
enum Ip {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The Internet checksum (RFC 1071) over a sequence of even-aligned chunks; only the
/// last chunk added may have odd length.
#[derive(Default)]
struct Checksum {
    sum: u64,
}

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        let mut pairs = bytes.chunks_exact(2);
        for pair in &mut pairs {
            self.sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        if let [last] = pairs.remainder() {
            self.sum += u64::from(*last) << 8;
        }
    }

    fn finish(&self) -> u16 {
        let mut sum = self.sum;
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

/// Opens a new file for writing, readable only by its owner: `O_CREAT | O_EXCL |
/// O_NOFOLLOW`, mode 0600. An existing file (whatever its mode) or a symlink planted at
/// `path` is refused, never truncated or followed: a capture and its key log are secrets
/// and must not land in a file someone else prepared.
pub fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::AlreadyExists => {
                    " (a capture never overwrites a file: move it away or choose another name)"
                }
                _ => "",
            };
            io::Error::new(e.kind(), format!("{}: {e}{hint}", path.display()))
        })
}

/// Size limit and rotation of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// Once the file would grow past this many bytes it is renamed to FILE.1 (FILE.1 to
    /// FILE.2, and so on) and a new FILE is started. `None`: one file, no limit.
    pub max_bytes: Option<u64>,
    /// Rotated files kept: FILE.1 (newest) to FILE.keep; older ones are deleted. With 0, the
    /// full file is deleted and started afresh.
    pub keep: usize,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        CaptureLimits {
            max_bytes: None,
            keep: 4,
        }
    }
}

/// `path` with `.n` appended: the n-th rotated capture file.
pub fn rotated_path(path: &Path, n: usize) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    std::path::PathBuf::from(name)
}

/// Bytes one record of `payload` between `src` and `dst` occupies in the file.
pub fn record_len(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> usize {
    let ip = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => IPV4_HEADER_LEN,
        _ => IPV6_HEADER_LEN,
    };
    RECORD_HEADER_LEN + ip + UDP_HEADER_LEN + payload.len()
}

const FILE_HEADER_LEN: u64 = 24;

/// Records every datagram a node sends and receives, as it is on the wire, for `--capture`,
/// and the transport keys of every session installed meanwhile to FILE.keylog.
/// The per-packet cost (a clock read and a buffered write) is paid only when capturing, and a
/// failed write is counted, never allowed to stop the transport.
pub struct Recorder {
    /// `None` once a rotation failed: capturing stopped (counted, and warned about once).
    writer: Option<CaptureWriter>,
    path: std::path::PathBuf,
    limits: CaptureLimits,
    /// Bytes in the current file.
    written: u64,
    keylog: File,
    local: SocketAddr,
    write_errors: u64,
    rotations: u64,
}

impl Recorder {
    /// Creates the capture at `path` and its key log at `keylog_path(path)`, both new files
    /// with mode 0600 (see `create_private`), and logs a warning that capture is on.
    pub fn create(path: &Path, local: SocketAddr, limits: CaptureLimits) -> io::Result<Recorder> {
        let keylog_at = keylog_path(path);
        let writer = CaptureWriter::create(path)?;
        let keylog = match create_private(&keylog_at) {
            Ok(mut file) => {
                file.write_all(KEYLOG_HEADER.as_bytes()).map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", keylog_at.display()))
                })?;
                file
            }
            Err(e) => {
                // The capture was created by us a moment ago (O_EXCL): take it back.
                drop(writer);
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        tracing::warn!(
            file = %path.display(),
            keylog = %keylog_at.display(),
            max_bytes = limits.max_bytes,
            keep = limits.keep,
            "capture is on: every datagram is recorded and every session's transport keys are \
             logged; the key log decrypts the capture, keep both private"
        );
        Ok(Recorder {
            writer: Some(writer),
            path: path.to_path_buf(),
            limits,
            written: FILE_HEADER_LEN,
            keylog,
            local,
            write_errors: 0,
            rotations: 0,
        })
    }

    /// Records a datagram the node received from `src`.
    pub fn received(&mut self, src: SocketAddr, datagram: &[u8]) {
        self.record(src, self.local, datagram);
    }

    /// Records a datagram the node sent to `dst`.
    pub fn sent(&mut self, dst: SocketAddr, datagram: &[u8]) {
        self.record(self.local, dst, datagram);
    }

    /// Appends one line for a session's keys to the key log (written at once, unbuffered:
    /// sessions are rare and a line must not be lost in a crash).
    pub fn session_keys(&mut self, keys: &SessionSecrets) {
        let line = keylog_line(keys);
        if self.keylog.write_all(line.as_bytes()).is_err() {
            self.write_errors += 1;
        }
    }

    /// Writes everything buffered; a failure is counted, never fatal to the node.
    pub fn flush(&mut self) {
        if let Some(writer) = self.writer.as_mut() {
            if writer.flush().is_err() {
                self.write_errors += 1;
            }
        }
    }

    /// Records that could not be written.
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// How many times the capture file was rotated.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    fn record(&mut self, src: SocketAddr, dst: SocketAddr, datagram: &[u8]) {
        let len = record_len(src, dst, datagram) as u64;
        if let Some(max) = self.limits.max_bytes {
            // A file always holds at least one record, however small the limit.
            if self.written > FILE_HEADER_LEN && self.written + len > max {
                if let Err(e) = self.rotate() {
                    tracing::warn!(error = %e, "capture rotation failed: capture stopped");
                    self.writer = None;
                }
            }
        }
        let Some(writer) = self.writer.as_mut() else {
            self.write_errors += 1;
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        match writer.record(now, src, dst, datagram) {
            Ok(()) => self.written += len,
            Err(_) => self.write_errors += 1,
        }
    }

    /// FILE.(keep-1) → FILE.keep, …, FILE → FILE.1, then a new FILE. Renames replace the
    /// target (a symlink there is replaced, not followed); the new FILE is `create_private`.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(writer) = self.writer.take() {
            writer.into_inner()?;
        }
        let keep = self.limits.keep;
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..keep).rev() {
                match std::fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1))
                {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        }
        self.writer = Some(CaptureWriter::create(&self.path)?);
        self.written = FILE_HEADER_LEN;
        self.rotations += 1;
        Ok(())
    }
}

/// Where a capture's key log is written: the capture's path plus `.keylog`.
pub fn keylog_path(capture: &Path) -> std::path::PathBuf {
    let mut name = capture.as_os_str().to_owned();
    name.push(".keylog");
    std::path::PathBuf::from(name)
}

/// The key log's first line. The format is in PROTOCOL.md, "Capture key log".
pub const KEYLOG_HEADER: &str = "# intentra key log v1: SESSION <local index> <remote index> \
<send key> <recv key> <peer public key> <initiator|responder> <new|rekey>\n";

/// The key log's keyword for one key set.
pub const KEYLOG_SESSION: &str = "SESSION";

/// One key log line: `SESSION` and seven space-separated fields, indexes as 8 hex digits of
/// their u32 value, keys as 64 hex digits, as seen by the node that wrote it.
pub fn keylog_line(keys: &SessionSecrets) -> String {
    format!(
        "{KEYLOG_SESSION} {:08x} {:08x} {} {} {} {} {}\n",
        keys.local_index.get(),
        keys.remote_index.get(),
        hex(&keys.send),
        hex(&keys.recv),
        hex(&keys.peer.0),
        if keys.initiator {
            "initiator"
        } else {
            "responder"
        },
        if keys.rekey { "rekey" } else { "new" },
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One key set read back from a key log.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LoggedSession {
    /// The logging node's index of the key set.
    pub local_index: u32,
    /// The peer's index.
    pub remote_index: u32,
    /// The key of packets the node sent.
    pub send: [u8; 32],
    /// The key of packets the node received.
    pub recv: [u8; 32],
    /// The peer's static public key.
    pub peer: [u8; 32],
    /// The node initiated this handshake.
    pub initiator: bool,
    /// A rekey, not a new session.
    pub rekey: bool,
}

/// Reads a key log written by `Recorder`: blank lines and `#` comments are skipped, any other
/// line must be a valid `SESSION` line (the error names its line number).
pub fn read_keylog(path: &Path) -> io::Result<Vec<LoggedSession>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    parse_keylog(&text).map_err(|line| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: line {line} is not a key log line", path.display()),
        )
    })
}

/// `read_keylog` on text; the error is the 1-based number of the first bad line.
pub fn parse_keylog(text: &str) -> Result<Vec<LoggedSession>, usize> {
    let mut sessions = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        sessions.push(parse_keylog_line(line).ok_or(n + 1)?);
    }
    Ok(sessions)
}

fn parse_keylog_line(line: &str) -> Option<LoggedSession> {
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != KEYLOG_SESSION {
        return None;
    }
    let index = |s: &str| {
        (s.len() == 8)
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
    };
    let local_index = index(fields.next()?)?;
    let remote_index = index(fields.next()?)?;
    let send = unhex32(fields.next()?)?;
    let recv = unhex32(fields.next()?)?;
    let peer = unhex32(fields.next()?)?;
    let initiator = match fields.next()? {
        "initiator" => true,
        "responder" => false,
        _ => return None,
    };
    let rekey = match fields.next()? {
        "rekey" => true,
        "new" => false,
        _ => return None,
    };
    if fields.next().is_some() || local_index == 0 || remote_index == 0 {
        return None;
    }
    Some(LoggedSession {
        local_index,
        remote_index,
        send,
        recv,
        peer,
        initiator,
        rekey,
    })
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(records: &[(u64, &str, &str, &[u8])]) -> Vec<u8> {
        let mut w = CaptureWriter::from_writer(Vec::new()).unwrap();
        for (ts, src, dst, payload) in records {
            w.record(*ts, src.parse().unwrap(), dst.parse().unwrap(), payload)
                .unwrap();
        }
        w.into_inner().unwrap()
    }

    fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
        let mut c = Checksum::default();
        for chunk in chunks {
            c.add(chunk);
        }
        !c.finish()
    }

    #[test]
    fn file_header_is_nanosecond_raw_ip() {
        let file = write(&[]);
        assert_eq!(file.len(), 24);
        assert_eq!(&file[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(file[20..24].try_into().unwrap()), 101);
    }

    #[test]
    fn ipv4_record_has_exact_lengths_and_valid_checksums() {
        let payload = b"hello, intentra";
        let ts = 1_700_000_000_123_456_789;
        let file = write(&[(ts, "10.1.2.3:4000", "10.9.8.7:5000", payload)]);
        let rec = &file[24..];
        assert_eq!(
            u32::from_le_bytes(rec[0..4].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(
            u32::from_le_bytes(rec[4..8].try_into().unwrap()),
            123_456_789
        );
        let len = 20 + 8 + payload.len();
        assert_eq!(
            u32::from_le_bytes(rec[8..12].try_into().unwrap()),
            len as u32
        );
        assert_eq!(rec.len(), 16 + len);
        let ip = &rec[16..];
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, len);
        assert_eq!(ip[9], 17);
        // A correct header sums to all ones, checksum included.
        assert_eq!(ones_complement_sum(&[&ip[..20]]), 0xffff);
        let udp = &ip[20..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 4000);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 5000);
        assert_eq!(
            u16::from_be_bytes([udp[4], udp[5]]) as usize,
            8 + payload.len()
        );
        assert_eq!(&udp[8..], payload);
        let pseudo = [&ip[12..20], &[0, 17], &udp[4..6], udp];
        assert_eq!(ones_complement_sum(&pseudo), 0xffff);
    }

    #[test]
    fn ipv6_record_has_valid_udp_checksum() {
        let payload = b"odd-length!";
        let file = write(&[(5, "[fd00::1]:1", "[fd00::2]:2", payload)]);
        let ip = &file[24 + 16..];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(
            u16::from_be_bytes([ip[4], ip[5]]) as usize,
            8 + payload.len()
        );
        assert_eq!(ip[6], 17);
        let udp = &ip[40..];
        assert_ne!(&udp[6..8], &[0, 0]);
        let pseudo = [&ip[8..40], &[0, 17], &udp[4..6], udp];
        assert_eq!(ones_complement_sum(&pseudo), 0xffff);
    }

    #[test]
    fn mixed_families_become_mapped_ipv6() {
        let file = write(&[(0, "127.0.0.1:1", "[::1]:2", b"x")]);
        let ip = &file[24 + 16..];
        assert_eq!(ip[0] >> 4, 6);
        let src: [u8; 16] = ip[8..24].try_into().unwrap();
        assert_eq!(Ipv6Addr::from(src), Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    }

    #[test]
    fn oversize_and_far_future_are_refused() {
        let mut w = CaptureWriter::from_writer(Vec::new()).unwrap();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let big = vec![0u8; SNAPLEN - 28 + 1];
        assert_eq!(
            w.record(0, a, a, &big).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(w.record(0, a, a, &big[1..]).is_ok());
        assert_eq!(
            w.record(u64::MAX, a, a, b"x").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
