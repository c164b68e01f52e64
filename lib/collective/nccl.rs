//! NCCL's all-reduce for the data-parallel sums of CUDA buffers (feature
//! `mpi`: the communicator's unique id travels over the MPI world).
//!
//! NCCL is loaded at run time, by its soname `libnccl.so.2`: a CUDA build of
//! PyTorch links it (the wheel's `nvidia-nccl` package), so the name finds
//! the copy libtorch already loaded, and a binary without CUDA still starts.
//! (The cudarc crate's loader asks only for `libnccl.so` and
//! `libnccl.so.<CUDA major>`, names the wheel does not ship; hence these few
//! declarations of `nccl.h`'s functions.) The CUDA driver (`libcuda.so.1`)
//! makes the rank's device current for the communicator and tells when a
//! sum has finished.
//!
//! A sum runs on the device's legacy default stream, libtorch's default
//! stream, so it follows the kernels that made the gradient and precedes
//! those that read it; the host then polls the stream (and NCCL's
//! asynchronous error) up to the group's timeout.
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::time::{Duration, Instant};

/// The 128 bytes that name one communicator (`ncclUniqueId`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [u8; 128],
}

type RawComm = *mut c_void;
type Stream = *mut c_void;
/// `ncclSum`, `ncclFloat32`, `ncclFloat64` (nccl.h).
const NCCL_SUM: c_int = 0;
const NCCL_FLOAT32: c_int = 7;
const NCCL_FLOAT64: c_int = 8;
/// `CUDA_ERROR_NOT_READY` (cuda.h): the stream still has work.
const CUDA_NOT_READY: c_int = 600;
/// The legacy default stream: libtorch's default stream on every device.
const DEFAULT_STREAM: Stream = std::ptr::null_mut();

/// The functions of libnccl this module calls.
pub struct Nccl {
    get_version: unsafe extern "C" fn(*mut c_int) -> c_int,
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> c_int,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        RawComm,
        Stream,
    ) -> c_int,
    async_error: unsafe extern "C" fn(RawComm, *mut c_int) -> c_int,
    abort: unsafe extern "C" fn(RawComm) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    _lib: libloading::Library,
}

/// Copies the function pointers `$sym` out of library `$lib` into a `$ty`
/// that holds the library too (which keeps them valid).
macro_rules! bind {
    ($ty:ident, $lib:expr, { $($field:ident: $sym:literal),* $(,)? }) => {{
        let lib = $lib;
        $(
            // SAFETY: the pointer is read with the signature nccl.h / cuda.h
            // declares for this symbol and lives no longer than `lib`.
            let $field = unsafe {
                *lib.get(concat!($sym, "\0").as_bytes())
                    .map_err(|e| format!("{}: {e}", $sym))?
            };
        )*
        $ty { $($field,)* _lib: lib }
    }};
}

impl Nccl {
    /// Loads NCCL (`libnccl.so.2`, else `libnccl.so`).
    ///
    /// Errors: why neither name loads, or a function is missing.
    pub fn load() -> Result<Nccl, String> {
        let lib = open(&["libnccl.so.2", "libnccl.so"])?;
        Ok(bind!(Nccl, lib, {
            get_version: "ncclGetVersion",
            get_unique_id: "ncclGetUniqueId",
            comm_init_rank: "ncclCommInitRank",
            all_reduce: "ncclAllReduce",
            async_error: "ncclCommGetAsyncError",
            abort: "ncclCommAbort",
            error_string: "ncclGetErrorString",
        }))
    }

    /// NCCL's version as "major.minor.patch" (from `ncclGetVersion`'s
    /// code, major·10000 + minor·100 + patch since 2.9).
    pub fn version(&self) -> Result<String, String> {
        let mut code = 0;
        self.check("ncclGetVersion", unsafe { (self.get_version)(&mut code) })?;
        Ok(format!(
            "{}.{}.{}",
            code / 10000,
            code / 100 % 100,
            code % 100
        ))
    }

    /// A new communicator id (rank 0 makes it, the others receive it).
    pub fn unique_id(&self) -> Result<UniqueId, String> {
        let mut id = UniqueId { internal: [0; 128] };
        self.check("ncclGetUniqueId", unsafe { (self.get_unique_id)(&mut id) })?;
        Ok(id)
    }

    /// Joins communicator `id` as `rank` of `size` on the CUDA device that
    /// is current on this thread (every rank calls it; it returns when all
    /// have).
    pub fn init_rank(&self, id: UniqueId, rank: usize, size: usize) -> Result<RawComm, String> {
        let mut comm: RawComm = std::ptr::null_mut();
        let rc = unsafe { (self.comm_init_rank)(&mut comm, size as c_int, id, rank as c_int) };
        self.check("ncclCommInitRank", rc)?;
        Ok(comm)
    }

    fn check(&self, call: &str, rc: c_int) -> Result<(), String> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static NUL-terminated text.
        let text = unsafe { CStr::from_ptr((self.error_string)(rc)) };
        Err(format!("{call} returned {rc} ({})", text.to_string_lossy()))
    }
}

/// The functions of the CUDA driver this module calls.
struct Driver {
    init: unsafe extern "C" fn(c_uint) -> c_int,
    device_get: unsafe extern "C" fn(*mut c_int, c_int) -> c_int,
    primary_ctx_retain: unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int,
    ctx_set_current: unsafe extern "C" fn(*mut c_void) -> c_int,
    stream_query: unsafe extern "C" fn(Stream) -> c_int,
    _lib: libloading::Library,
}

impl Driver {
    fn load() -> Result<Driver, String> {
        Ok(bind!(Driver, open(&["libcuda.so.1"])?, {
            init: "cuInit",
            device_get: "cuDeviceGet",
            primary_ctx_retain: "cuDevicePrimaryCtxRetain",
            ctx_set_current: "cuCtxSetCurrent",
            stream_query: "cuStreamQuery",
        }))
    }

    /// Makes CUDA device `ordinal`'s primary context (libtorch's) current
    /// on this thread.
    fn use_device(&self, ordinal: usize) -> Result<(), String> {
        let fail = |call: &str, rc: c_int| match rc {
            0 => Ok(()),
            rc => Err(format!("{call} returned CUDA error {rc}")),
        };
        let (mut dev, mut ctx) = (0, std::ptr::null_mut());
        unsafe {
            fail("cuInit", (self.init)(0))?;
            fail("cuDeviceGet", (self.device_get)(&mut dev, ordinal as c_int))?;
            fail(
                "cuDevicePrimaryCtxRetain",
                (self.primary_ctx_retain)(&mut ctx, dev),
            )?;
            fail("cuCtxSetCurrent", (self.ctx_set_current)(ctx))
        }
    }
}

fn open(names: &[&str]) -> Result<libloading::Library, String> {
    let mut why = Vec::new();
    for name in names {
        // SAFETY: loading NCCL or the CUDA driver runs only their
        // initialisers, which have no preconditions.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(why.join("; "))
}

/// One rank's NCCL communicator on its CUDA device.
pub struct Comm {
    nccl: Nccl,
    driver: Driver,
    comm: RawComm,
    version: String,
}

impl Comm {
    /// Joins communicator `id` as `rank` of `size` on CUDA device `ordinal`.
    pub fn join(
        nccl: Nccl,
        id: UniqueId,
        rank: usize,
        size: usize,
        ordinal: usize,
    ) -> Result<Comm, String> {
        let driver = Driver::load()?;
        driver.use_device(ordinal)?;
        let version = nccl.version()?;
        let comm = nccl.init_rank(id, rank, size)?;
        Ok(Comm {
            nccl,
            driver,
            comm,
            version,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Replaces the `n` values (f32, or f64 with `double`) at device
    /// pointer `ptr` by their sum over the ranks and waits for it, at most
    /// `timeout`.
    ///
    /// Errors: NCCL's error, or the timeout passed (this rank's NCCL work
    /// is then aborted; the caller stops every rank).
    pub fn sum(
        &self,
        ptr: *mut c_void,
        n: usize,
        double: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let dtype = if double { NCCL_FLOAT64 } else { NCCL_FLOAT32 };
        let rc = unsafe {
            (self.nccl.all_reduce)(ptr, ptr, n, dtype, NCCL_SUM, self.comm, DEFAULT_STREAM)
        };
        self.nccl.check("ncclAllReduce", rc)?;
        let start = Instant::now();
        loop {
            match unsafe { (self.driver.stream_query)(DEFAULT_STREAM) } {
                0 => return Ok(()),
                CUDA_NOT_READY => {}
                rc => return Err(format!("cuStreamQuery returned CUDA error {rc}")),
            }
            let mut state = 0;
            let rc = unsafe { (self.nccl.async_error)(self.comm, &mut state) };
            self.nccl.check("ncclCommGetAsyncError", rc)?;
            if let Err(e) = self.nccl.check("ncclAllReduce (asynchronous)", state) {
                unsafe { (self.nccl.abort)(self.comm) };
                return Err(e);
            }
            if start.elapsed() > timeout {
                unsafe { (self.nccl.abort)(self.comm) };
                return Err(format!(
                    "a sum waited {:.0} s for the other ranks (a rank died or hangs)",
                    start.elapsed().as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CUDA build of libtorch this crate links brings libnccl.so.2
    /// (`make setup`'s torch wheel): on a machine without a GPU NCCL still
    /// loads, reports its version and makes ids; joining a communicator
    /// fails with NCCL's own error text.
    #[test]
    fn nccl_loads_and_reports_what_fails_without_a_gpu() {
        let nccl = Nccl::load().expect("libnccl.so.2 (the torch wheel's nvidia-nccl)");
        let version = nccl.version().unwrap();
        assert!(version.starts_with("2."), "{version}");
        let (a, b) = (nccl.unique_id().unwrap(), nccl.unique_id().unwrap());
        assert_ne!(a.internal, b.internal);
        if tch::Cuda::device_count() == 0 {
            let err = nccl.init_rank(a, 0, 1).map(|_| ()).unwrap_err();
            assert!(err.starts_with("ncclCommInitRank returned "), "{err}");
            assert!(err.contains("cuda"), "{err}");
            println!("NCCL {version} loaded; without a GPU: {err}");
        }
    }
}
