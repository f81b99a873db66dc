//! Glue between the generated bindings and [`Plugin`](crate::Plugin); used by `export!` and
//! `no_std_runtime!` only.

pub use alloc::string::String;

#[cfg(target_arch = "wasm32")]
pub use wasm::*;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use crate::bindings::exports::flexgate::plugin::handler;
    use crate::bindings::flexgate::plugin::types as wit;
    use crate::prelude::*;
    use crate::{Action, Ctx, Plugin, Request, Response};
    use alloc::rc::Rc;
    use core::any::Any;
    use core::cell::RefCell;

    pub use handler::Guest;
    pub use wit::{Action as WitAction, CallInfo};
    pub use wit_bindgen;

    /// The borrowed request handle as the generated trait spells it.
    pub type RequestBorrow<'a> = &'a wit::Request;
    /// The borrowed response handle as the generated trait spells it.
    pub type ResponseBorrow<'a> = &'a wit::Response;

    /// The plugin value of this instance. A plain static instead of `thread_local!` so the SDK
    /// needs no `std`.
    struct State(RefCell<Option<Rc<dyn Any>>>);

    // SAFETY: wasm32-wasip2 components are single-threaded (no `atomics`/shared memory, and the
    // component model never calls into one instance concurrently), so the cell is never reached
    // from two threads.
    #[allow(unsafe_code)]
    unsafe impl Sync for State {}

    static STATE: State = State(RefCell::new(None));

    fn current<P: Plugin>() -> Result<Rc<P>, String> {
        let any = STATE.0.borrow().clone().ok_or("plugin not initialised")?;
        any.downcast::<P>()
            .map_err(|_| "plugin type mismatch".to_string())
    }

    fn ctx(info: CallInfo) -> Ctx {
        Ctx {
            client_addr: info.client_addr,
            route: info.route,
            request_id: info.request_id,
            stash: info.stash,
        }
    }

    pub fn init<P: Plugin>(config: &str) -> Result<(), String> {
        let p = crate::instantiate::<P>(config).map_err(|e| e.0)?;
        let p: Rc<dyn Any> = Rc::new(p);
        *STATE.0.borrow_mut() = Some(p);
        Ok(())
    }

    pub fn on_request<P: Plugin>(info: CallInfo, req: &wit::Request) -> Result<WitAction, String> {
        let p = current::<P>()?;
        let mut r = Request::from_host(req);
        match p.on_request(&ctx(info), &mut r).map_err(|e| e.0)? {
            Action::Continue => Ok(WitAction::Continue),
            Action::Respond(resp) => {
                let (status, headers, body) = resp.into_parts();
                Ok(WitAction::Respond(wit::Reply {
                    status,
                    headers: headers.into_vec(),
                    body,
                }))
            }
        }
    }

    pub fn on_response<P: Plugin>(info: CallInfo, resp: &wit::Response) -> Result<(), String> {
        let p = current::<P>()?;
        let mut r = Response::from_host(resp);
        p.on_response(&ctx(info), &mut r).map_err(|e| e.0)
    }

    /// `no_std_runtime!`'s global allocator: wasi-libc's `malloc`, the allocator `std` uses on
    /// this target, so the `cabi_realloc` the host allocates guest strings/lists with (from
    /// wasi-libc as well, see `LINK_CABI_REALLOC`) and Rust's frees agree.
    #[derive(Debug)]
    pub struct LibcAlloc;

    /// wasi-libc's `malloc` alignment on wasm32.
    const MIN_ALIGN: usize = 8;

    #[allow(unsafe_code)]
    mod libc {
        unsafe extern "C" {
            pub fn malloc(size: usize) -> *mut u8;
            pub fn calloc(n: usize, size: usize) -> *mut u8;
            pub fn aligned_alloc(align: usize, size: usize) -> *mut u8;
            pub fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
            pub fn free(ptr: *mut u8);
            pub fn cabi_realloc(ptr: *mut u8, old: usize, align: usize, new: usize) -> *mut u8;
        }
    }

    /// A reference that makes the linker keep (and so export) wasi-libc's `cabi_realloc`, as
    /// `std` does for `std` plugins; the component model needs it to pass strings and lists in.
    #[allow(unsafe_code)]
    #[used]
    static LINK_CABI_REALLOC: unsafe extern "C" fn(*mut u8, usize, usize, usize) -> *mut u8 =
        libc::cabi_realloc;

    // SAFETY: forwards to wasi-libc's allocator with the same contract as `std`'s `System` on
    // wasm32-wasi: `malloc`/`calloc` for alignments it guarantees, `aligned_alloc` otherwise.
    #[allow(unsafe_code)]
    unsafe impl core::alloc::GlobalAlloc for LibcAlloc {
        unsafe fn alloc(&self, l: core::alloc::Layout) -> *mut u8 {
            unsafe {
                if l.align() <= MIN_ALIGN && l.align() <= l.size() {
                    libc::malloc(l.size())
                } else {
                    libc::aligned_alloc(l.align(), l.size())
                }
            }
        }
        unsafe fn alloc_zeroed(&self, l: core::alloc::Layout) -> *mut u8 {
            if l.align() <= MIN_ALIGN && l.align() <= l.size() {
                unsafe { libc::calloc(l.size(), 1) }
            } else {
                let p = unsafe { self.alloc(l) };
                if !p.is_null() {
                    unsafe { core::ptr::write_bytes(p, 0, l.size()) };
                }
                p
            }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, _l: core::alloc::Layout) {
            unsafe { libc::free(ptr) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, l: core::alloc::Layout, new: usize) -> *mut u8 {
            unsafe {
                if l.align() <= MIN_ALIGN && l.align() <= new {
                    libc::realloc(ptr, new)
                } else {
                    let n = core::alloc::Layout::from_size_align_unchecked(new, l.align());
                    let p = self.alloc(n);
                    if !p.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, p, l.size().min(new));
                        self.dealloc(ptr, l);
                    }
                    p
                }
            }
        }
    }

    /// `no_std_runtime!`'s panic handler: the message goes to the host log (the host tags it with
    /// plugin, version, route and request id), then the instance traps like a `std` panic does.
    /// The message is formatted into a fixed buffer: the panic may be an allocation failure.
    pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        use core::fmt::Write;
        let mut msg = PanicBuf {
            buf: [0; 512],
            len: 0,
        };
        let _ = write!(msg, "plugin panicked: {info}");
        let text = core::str::from_utf8(&msg.buf[..msg.len]).unwrap_or("plugin panicked");
        crate::bindings::flexgate::plugin::host::log(
            crate::bindings::flexgate::plugin::host::Level::Error,
            text,
            &[],
        );
        core::arch::wasm32::unreachable()
    }

    /// A truncating `fmt::Write` sink (whole characters only).
    struct PanicBuf {
        buf: [u8; 512],
        len: usize,
    }

    impl core::fmt::Write for PanicBuf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let room = self.buf.len() - self.len;
            let mut take = s.len().min(room);
            while !s.is_char_boundary(take) {
                take -= 1;
            }
            self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
            self.len += take;
            Ok(())
        }
    }
}
