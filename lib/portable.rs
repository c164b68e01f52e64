//! What the portable build (`make dist`, feature `portable`) adds so that
//! its binaries start on glibc 2.28.
//!
//! torch-sys' C++ glue is compiled with this machine's g++ and glibc
//! headers; since glibc 2.32, libstdc++'s headers read the glibc variable
//! `__libc_single_threaded` (non-zero while a process has one thread: it
//! lets shared-pointer counts skip atomic operations). glibc 2.28 has no
//! such variable, so the binaries define it here, as 0 ("maybe several
//! threads"): the glue then always takes the atomic path, which is correct
//! under any number of threads. It is writable, as glibc's own is: a newer
//! glibc that binds its writes to this definition (pthread_create sets it
//! to 0) writes the value it already holds.

/// Read by g++-compiled C++ code as glibc's `char __libc_single_threaded`.
#[no_mangle]
#[used]
pub static mut __libc_single_threaded: std::os::raw::c_char = 0;
