//! gzip for request bodies: Intel ISA-L's igzip when its shared library is installed, else
//! zlib-rs (through flate2).
//!
//! Compressing the requests is the largest single cost of a Mixpanel sync (about a third of
//! wharf's CPU with zlib-rs level 1). igzip level 1 compresses the same NDJSON about twice as
//! fast *and* about a third smaller (its level 1 is a real LZ77 + Huffman pass, where zlib's
//! level 1 is a quick match finder with static codes). ISA-L is a C/assembly library that would
//! need nasm and autotools to build, so wharf does not build it: it loads `libisal.so.2` at run
//! time (Debian/Ubuntu package `libisal2`, Fedora `isa-l`) and checks it once on start-up by
//! compressing a sample and decompressing it with zlib-rs; a missing library, or one that fails
//! the check, leaves zlib-rs in use. `WHARF_GZIP=zlib` forces zlib-rs.
//!
//! Only the stable public part of ISA-L's ABI is used (soname `libisal.so.2`): the functions
//! `isal_deflate_stateless_init`, `isal_deflate_stateless`, `isal_inflate_init`,
//! `isal_inflate_stateless` and `crc32_gzip_refl`, and the public fields at the start of
//! `struct isal_zstream` and `struct inflate_state`, whose private remainders are left as
//! opaque bytes.
//!
//! [`gunzip`] inflates request bodies (the Mixpanel receiver) the same way: a single-member
//! body by igzip (raw deflate between a header and trailer checked here), anything else —
//! several members, a trailer that does not match, no ISA-L — by zlib-rs, which also words
//! the errors.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::io::Write;
use std::sync::OnceLock;

/// Which implementation compresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Intel ISA-L igzip, level 1 (loaded from `libisal.so.2`).
    Isal,
    /// zlib-rs, level 1.
    Zlib,
}

impl Backend {
    /// A short description for logs and `wharf check`.
    pub fn describe(self) -> &'static str {
        match self {
            Backend::Isal => "ISA-L igzip level 1 (libisal.so.2)",
            Backend::Zlib => "zlib-rs level 1",
        }
    }
}

/// The backend this process uses (decided once).
pub fn backend() -> Backend {
    if isal().is_some() {
        Backend::Isal
    } else {
        Backend::Zlib
    }
}

/// `data` as one gzip member, by [`backend`].
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    if let Some(lib) = isal() {
        if let Some(out) = lib.compress(data) {
            return Ok(out);
        }
    }
    gzip_zlib(data)
}

/// Why [`gunzip`] gave up.
#[derive(Debug)]
pub enum GunzipError {
    /// Not valid gzip (the message says why).
    Invalid(String),
    /// The data inflates to more than the limit.
    TooLarge,
}

/// Inflates gzip `data` (one or more members), refusing to produce more than `limit` bytes.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    if let Some(lib) = isal() {
        if let Some(out) = lib.inflate_member(data, limit) {
            return Ok(out);
        }
    }
    gunzip_zlib(data, limit)
}

/// [`gunzip`] by zlib-rs.
fn gunzip_zlib(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    use std::io::Read;
    // Sized from the trailer (the last member's length mod 2^32; a hint only), so inflating
    // does not grow the buffer step by step.
    let mut out = Vec::with_capacity(trailer_size(data).unwrap_or(0).min(limit + 1));
    let read = flate2::read::MultiGzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Err(e) => Err(GunzipError::Invalid(e.to_string())),
        Ok(_) if out.len() > limit => Err(GunzipError::TooLarge),
        Ok(_) => Ok(out),
    }
}

/// ISIZE of the last member: the inflated size mod 2^32 if `data` is one member.
fn trailer_size(data: &[u8]) -> Option<usize> {
    let at = data.len().checked_sub(4)?;
    let bytes: [u8; 4] = data[at..].try_into().ok()?;
    Some(u32::from_le_bytes(bytes) as usize)
}

/// Where the deflate data of a gzip member starts (RFC 1952 header: magic, method 8, flags and
/// their optional fields); `None` for anything else, reserved flags included.
fn gzip_header_len(data: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let (&[0x1f, 0x8b, 8, flags], rest) = data.split_first_chunk::<4>()? else {
        return None;
    };
    if flags & 0xe0 != 0 || rest.len() < 6 {
        return None;
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = data.get(at..at + 2)?;
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += memchr::memchr(0, data.get(at..)?)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at <= data.len()).then_some(at)
}

/// `data` as one gzip member, by zlib-rs.
fn gzip_zlib(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// The public head of `struct isal_zstream` (igzip_lib.h); `internal_state` is private to the
/// library and only needs room (82,320 bytes in ISA-L 2.30/2.31; twice that is reserved).
#[repr(C)]
struct ZStream {
    next_in: *const u8,
    avail_in: u32,
    total_in: u32,
    next_out: *mut u8,
    avail_out: u32,
    total_out: u32,
    hufftables: *mut c_void,
    level: u32,
    level_buf_size: u32,
    level_buf: *mut u8,
    end_of_stream: u16,
    flush: u16,
    gzip_flag: u16,
    hist_bits: u16,
    internal_state: [u64; INTERNAL_STATE_WORDS],
}

const INTERNAL_STATE_WORDS: usize = 2 * 82_320 / 8;
/// `ISAL_DEF_LVL1_DEFAULT`: the level buffer igzip's level 1 works in.
const LEVEL1_BUF: usize = 282_624;
/// `IGZIP_GZIP`: write a gzip header and trailer.
const IGZIP_GZIP: u16 = 1;
/// `COMP_OK`.
const COMP_OK: c_int = 0;

/// The public head of `struct inflate_state` (igzip_lib.h); the rest (Huffman tables, the
/// checksum mode, buffers: 87,368 bytes in all in ISA-L 2.30/2.31) is private here and left at
/// what `isal_inflate_init` sets, which is raw deflate.
#[repr(C)]
struct InflateState {
    next_out: *mut u8,
    avail_out: u32,
    total_out: u32,
    next_in: *const u8,
    read_in: u64,
    avail_in: u32,
    read_in_length: i32,
    private: [u64; INFLATE_PRIVATE_WORDS],
}

const INFLATE_PRIVATE_WORDS: usize = 2 * 87_368 / 8;
/// `ISAL_DECOMP_OK`.
const DECOMP_OK: c_int = 0;

type InitFn = unsafe extern "C" fn(*mut ZStream);
type DeflateFn = unsafe extern "C" fn(*mut ZStream) -> c_int;
type InflateInitFn = unsafe extern "C" fn(*mut InflateState);
type InflateFn = unsafe extern "C" fn(*mut InflateState) -> c_int;
type CrcFn = unsafe extern "C" fn(u32, *const u8, u64) -> u32;

struct Isal {
    init: InitFn,
    deflate: DeflateFn,
    inflate: Option<Inflate>,
}

/// The inflate half, used once it passed its own self-test.
struct Inflate {
    init: InflateInitFn,
    inflate: InflateFn,
    crc32: CrcFn,
}

/// A thread's stream and level buffer, reused by every call on that thread.
struct Scratch {
    stream: Box<ZStream>,
    level_buf: Vec<u8>,
}

thread_local! {
    static INFLATE_STATE: RefCell<Option<Box<InflateState>>> = const { RefCell::new(None) };
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

impl Isal {
    fn load() -> Option<Isal> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed, so the
        // function pointers stay valid for the life of the process.
        unsafe {
            let handle = libc::dlopen(c"libisal.so.2".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                return None;
            }
            let symbol = |name: &std::ffi::CStr| {
                let f = libc::dlsym(handle, name.as_ptr());
                (!f.is_null()).then_some(f)
            };
            let init = symbol(c"isal_deflate_stateless_init")?;
            let deflate = symbol(c"isal_deflate_stateless")?;
            let inflate = match (
                symbol(c"isal_inflate_init"),
                symbol(c"isal_inflate_stateless"),
                symbol(c"crc32_gzip_refl"),
            ) {
                (Some(init), Some(inflate), Some(crc32)) => Some(Inflate {
                    init: std::mem::transmute::<*mut c_void, InflateInitFn>(init),
                    inflate: std::mem::transmute::<*mut c_void, InflateFn>(inflate),
                    crc32: std::mem::transmute::<*mut c_void, CrcFn>(crc32),
                }),
                _ => None,
            };
            Some(Isal {
                init: std::mem::transmute::<*mut c_void, InitFn>(init),
                deflate: std::mem::transmute::<*mut c_void, DeflateFn>(deflate),
                inflate,
            })
        }
    }

    /// A single-member gzip `data` inflated by igzip; `None` when it is not that (several
    /// members, an unusual header, a declared size over `limit`) or does not check out (bad
    /// deflate data, CRC or size): the caller then lets zlib-rs decide and word the error.
    fn inflate_member(&self, data: &[u8], limit: usize) -> Option<Vec<u8>> {
        let lib = self.inflate.as_ref()?;
        let start = gzip_header_len(data)?;
        let end = data.len().checked_sub(8).filter(|&end| end >= start)?;
        let trailer = &data[end..];
        let crc = u32::from_le_bytes(trailer[..4].try_into().ok()?);
        let size = trailer_size(data)?;
        if size > limit {
            return None;
        }
        let deflated = &data[start..end];
        let mut out: Vec<u8> = Vec::with_capacity(size);
        INFLATE_STATE.with(|cell| {
            let mut slot = cell.borrow_mut();
            // SAFETY: plain old data; `isal_inflate_init` overwrites what it needs.
            let state = slot.get_or_insert_with(|| Box::new(unsafe { std::mem::zeroed() }));
            // SAFETY: `state` has the public layout of `struct inflate_state` and room for its
            // private part; igzip reads at most `avail_in` bytes from `next_in` and writes at
            // most `avail_out` bytes to `next_out`, both of which outlive the call.
            unsafe {
                (lib.init)(&mut **state);
                state.next_in = deflated.as_ptr();
                state.avail_in = u32::try_from(deflated.len()).ok()?;
                state.next_out = out.as_mut_ptr();
                state.avail_out = u32::try_from(size).ok()?;
                // The member must end exactly where its trailer starts.
                if (lib.inflate)(&mut **state) != DECOMP_OK
                    || state.avail_in != 0
                    || state.total_out as usize != size
                {
                    return None;
                }
                out.set_len(size);
                ((lib.crc32)(0, out.as_ptr(), size as u64) == crc).then_some(())
            }
        })?;
        Some(out)
    }

    /// Inflates zlib-rs's gzip of a sample and compares: an ABI that differs from the one
    /// declared here fails this, and zlib-rs inflates instead.
    fn inflate_self_test(&self) -> bool {
        let sample = Self::sample();
        gzip_zlib(&sample)
            .ok()
            .and_then(|packed| self.inflate_member(&packed, sample.len()))
            .is_some_and(|out| out == sample)
    }

    fn sample() -> Vec<u8> {
        let mut sample = Vec::new();
        for i in 0..2_000u32 {
            let _ = writeln!(
                sample,
                "{{\"event\":\"e{}\",\"properties\":{{\"time\":{},\"n\":{}}}}}",
                i % 7,
                1_700_000_000_000u64 + u64::from(i),
                i.wrapping_mul(2_654_435_761)
            );
        }
        sample
    }

    /// `data` compressed in one call, or `None` if it did not fit the output buffer (data
    /// that does not compress) or igzip reported an error.
    fn compress(&self, data: &[u8]) -> Option<Vec<u8>> {
        let avail_in = u32::try_from(data.len()).ok()?;
        // Room for data that barely compresses: stored blocks cost 5 bytes per 64 KiB.
        let capacity = data.len() + data.len() / 64 + 1024;
        let avail_out = u32::try_from(capacity).ok()?;
        let mut out: Vec<u8> = Vec::with_capacity(capacity);
        SCRATCH.with(|cell| {
            let mut slot = cell.borrow_mut();
            let scratch = slot.get_or_insert_with(|| Scratch {
                // SAFETY: the struct is plain old data (pointers and integers); all-zero is
                // what igzip's init expects to overwrite.
                stream: Box::new(unsafe { std::mem::zeroed() }),
                level_buf: vec![0; LEVEL1_BUF],
            });
            let stream = &mut *scratch.stream;
            // SAFETY: `stream` has the public layout of `struct isal_zstream` and room for its
            // private part; the input, output and level buffers outlive the call, and igzip
            // writes at most `avail_out` bytes to `next_out`.
            unsafe {
                (self.init)(stream);
                stream.next_in = data.as_ptr();
                stream.avail_in = avail_in;
                stream.next_out = out.as_mut_ptr();
                stream.avail_out = avail_out;
                stream.level = 1;
                stream.level_buf = scratch.level_buf.as_mut_ptr();
                stream.level_buf_size = LEVEL1_BUF as u32;
                stream.gzip_flag = IGZIP_GZIP;
                stream.end_of_stream = 1;
                stream.flush = 0;
                if (self.deflate)(stream) != COMP_OK || stream.avail_in != 0 {
                    return None;
                }
                let written = stream.total_out as usize;
                if written > capacity {
                    return None;
                }
                out.set_len(written);
            }
            Some(out)
        })
    }

    /// Compresses a sample and reads it back with zlib-rs: a library whose ABI differs from the
    /// one declared here fails this and is not used.
    fn self_test(&self) -> bool {
        let sample = Self::sample();
        let Some(packed) = self.compress(&sample) else {
            return false;
        };
        let mut unpacked = Vec::new();
        let read = std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&packed[..]),
            &mut unpacked,
        );
        read.is_ok() && unpacked == sample
    }
}

fn isal() -> Option<&'static Isal> {
    static ISAL: OnceLock<Option<Isal>> = OnceLock::new();
    ISAL.get_or_init(|| {
        if std::env::var("WHARF_GZIP").is_ok_and(|v| v.eq_ignore_ascii_case("zlib")) {
            return None;
        }
        let Some(mut lib) = Isal::load() else {
            tracing::debug!("libisal.so.2 not found; gzip uses zlib-rs");
            return None;
        };
        if lib.inflate.is_some() && !lib.inflate_self_test() {
            tracing::warn!("libisal.so.2's inflate failed its self-test; zlib-rs inflates");
            lib.inflate = None;
        }
        if lib.self_test() {
            tracing::debug!("gzip uses ISA-L igzip (libisal.so.2)");
            Some(lib)
        } else {
            tracing::warn!("libisal.so.2 failed its self-test; gzip uses zlib-rs");
            None
        }
    })
    .as_ref()
}

/// Fuzzing entry point (`wharf::fuzzing::gunzip`): [`gunzip`] of `data`, checked against
/// zlib-rs alone: whatever ISA-L inflates, zlib-rs inflates to the same bytes.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let out = gunzip(data, limit);
    if let Some(isal) = isal().and_then(|lib| lib.inflate_member(data, limit)) {
        let zlib = gunzip_zlib(data, limit).ok();
        assert_eq!(zlib.as_ref(), Some(&isal), "ISA-L and zlib-rs disagree");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn unzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    fn samples() -> Vec<Vec<u8>> {
        let mut random = vec![0u8; 300_000];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for b in &mut random {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("{{\"event\":\"Page View\",\"n\":{i}}}\n").into_bytes())
            .collect();
        vec![Vec::new(), b"x".to_vec(), text, random]
    }

    #[test]
    fn every_backend_round_trips() {
        for data in samples() {
            assert_eq!(unzip(&gzip(&data).unwrap()), data);
            assert_eq!(unzip(&gzip_zlib(&data).unwrap()), data);
        }
    }

    /// Runs where libisal.so.2 is installed (CI installs it); elsewhere there is nothing to
    /// check, and the backend must say so.
    #[test]
    fn isal_when_installed_round_trips_incompressible_and_text_data() {
        let Some(lib) = isal() else {
            assert_eq!(backend(), Backend::Zlib);
            return;
        };
        assert_eq!(backend(), Backend::Isal);
        for data in samples() {
            // Incompressible data may not fit one call; then `gzip` falls back to zlib-rs.
            if let Some(packed) = lib.compress(&data) {
                assert_eq!(unzip(&packed), data);
            }
        }
        // Threads each get their own scratch state.
        let handles: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let data: Vec<u8> = (0..5_000)
                        .flat_map(|i| format!("{t}:{i}\n").into_bytes())
                        .collect();
                    assert_eq!(unzip(&gzip(&data).unwrap()), data);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    /// A gzip member with every optional header field (name, comment, extra, header CRC).
    fn member_with_header_fields(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = flate2::GzBuilder::new()
            .filename("events.ndjson")
            .comment("a comment")
            .extra(vec![1, 2, 3])
            .write(&mut out, flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
        out
    }

    #[test]
    fn gunzip_agrees_with_zlib_on_good_and_bad_input() {
        let text = samples().swap_remove(2);
        let one = gzip(&text).unwrap();
        let mut two = gzip(b"first\n").unwrap();
        two.extend_from_slice(&gzip_zlib(b"second\n").unwrap());
        let mut bad_crc = one.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        let mut bad_size = one.clone();
        let at = bad_size.len() - 4;
        bad_size[at] ^= 1;
        let mut corrupt = one.clone();
        corrupt[40] ^= 0x55;
        let truncated = one[..one.len() - 12].to_vec();
        // (case, gzip data, what it inflates to or `None` for invalid)
        type Case<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>);
        let cases: Vec<Case> = vec![
            ("one member", one.clone(), Some(text.clone())),
            (
                "header fields",
                member_with_header_fields(&text),
                Some(text.clone()),
            ),
            ("two members", two, Some(b"first\nsecond\n".to_vec())),
            ("empty", gzip(b"").unwrap(), Some(Vec::new())),
            ("bad crc", bad_crc, None),
            ("bad size", bad_size, None),
            ("corrupt", corrupt, None),
            ("truncated", truncated, None),
            ("not gzip", text.clone(), None),
        ];
        for (name, data, want) in cases {
            let got = gunzip(&data, usize::MAX >> 1);
            let zlib = gunzip_zlib(&data, usize::MAX >> 1);
            match want {
                Some(want) => {
                    assert_eq!(got.unwrap(), want, "{name}");
                    assert_eq!(zlib.unwrap(), want, "{name}");
                }
                None => {
                    assert!(
                        matches!(got, Err(GunzipError::Invalid(_))),
                        "{name}: {got:?}"
                    );
                    assert!(matches!(zlib, Err(GunzipError::Invalid(_))), "{name}");
                }
            }
        }
        // The limit holds whatever the trailer claims.
        assert!(matches!(gunzip(&one, text.len()), Ok(out) if out == text));
        assert!(matches!(
            gunzip(&one, text.len() - 1),
            Err(GunzipError::TooLarge)
        ));
        let mut lying = one.clone();
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&10u32.to_le_bytes());
        assert!(matches!(gunzip(&lying, 1_000), Err(GunzipError::TooLarge)));
        if let Some(lib) = isal() {
            assert!(
                lib.inflate.is_some(),
                "ISA-L's inflate passed its self-test"
            );
            assert_eq!(lib.inflate_member(&one, usize::MAX >> 1), Some(text));
        }
    }
}
