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
//! Only the stable public part of ISA-L's ABI is used (soname `libisal.so.2`): the two
//! functions `isal_deflate_stateless_init` and `isal_deflate_stateless`, and the public fields at
//! the start of `struct isal_zstream`, whose private remainder is left as opaque bytes.

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

/// `data` as one gzip member, by zlib-rs.
pub fn gzip_zlib(data: &[u8]) -> std::io::Result<Vec<u8>> {
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

type InitFn = unsafe extern "C" fn(*mut ZStream);
type DeflateFn = unsafe extern "C" fn(*mut ZStream) -> c_int;

struct Isal {
    init: InitFn,
    deflate: DeflateFn,
}

/// A thread's stream and level buffer, reused by every call on that thread.
struct Scratch {
    stream: Box<ZStream>,
    level_buf: Vec<u8>,
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
            let init = libc::dlsym(handle, c"isal_deflate_stateless_init".as_ptr());
            let deflate = libc::dlsym(handle, c"isal_deflate_stateless".as_ptr());
            if init.is_null() || deflate.is_null() {
                return None;
            }
            Some(Isal {
                init: std::mem::transmute::<*mut c_void, InitFn>(init),
                deflate: std::mem::transmute::<*mut c_void, DeflateFn>(deflate),
            })
        }
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
        let Some(lib) = Isal::load() else {
            tracing::debug!("libisal.so.2 not found; gzip uses zlib-rs");
            return None;
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
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
            assert_eq!(gunzip(&gzip(&data).unwrap()), data);
            assert_eq!(gunzip(&gzip_zlib(&data).unwrap()), data);
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
                assert_eq!(gunzip(&packed), data);
            }
        }
        // Threads each get their own scratch state.
        let handles: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let data: Vec<u8> = (0..5_000)
                        .flat_map(|i| format!("{t}:{i}\n").into_bytes())
                        .collect();
                    assert_eq!(gunzip(&gzip(&data).unwrap()), data);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
