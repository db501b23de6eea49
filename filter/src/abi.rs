//! The proxy-wasm ABI 0.2.1 entry points the filter exports.
//!
//! One root context per plugin (`parent == 0`) and one stream context per
//! HTTP request. Callbacks the filter has no use for are not exported: the
//! host then applies its defaults (continue). Nothing here panics: an unknown
//! context id, or a re-entrant call, fails closed instead.
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::cell::RefCell;
use core::mem::MaybeUninit;

use crate::{ffi, Root, Stream};

#[derive(Default)]
struct Contexts {
    roots: BTreeMap<u32, Root>,
    streams: BTreeMap<u32, Stream>,
}

std::thread_local! {
    static CONTEXTS: RefCell<Contexts> = const {
        RefCell::new(Contexts { roots: BTreeMap::new(), streams: BTreeMap::new() })
    };
}

/// Runs `f` on the context table; `None` if it is busy (a host call made
/// from inside a callback re-entered us), which callers treat as failure.
fn with<T>(f: impl FnOnce(&mut Contexts) -> T) -> Option<T> {
    CONTEXTS
        .try_with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c)))
        .ok()
        .flatten()
}

/// The allocator the host uses for buffers it hands us (wasm32-unknown-unknown
/// hosts look for `malloc` first). A boxed slice of exactly `size` bytes, freed
/// by `ffi` as a `Vec` of that length and capacity.
#[export_name = "malloc"]
pub extern "C" fn proxy_malloc(size: usize) -> *mut u8 {
    let slice: Box<[MaybeUninit<u8>]> = Box::new_uninit_slice(size);
    Box::into_raw(slice).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    proxy_malloc(size)
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    let created = with(|c| {
        if parent_context_id == 0 {
            c.roots.insert(context_id, Root::default());
        } else {
            // An unknown parent gives an unconfigured stream, which denies.
            let stream = match c.roots.get(&parent_context_id) {
                Some(root) => root.new_stream(),
                None => Root::default().new_stream(),
            };
            c.streams.insert(context_id, stream);
        }
    });
    if created.is_none() {
        ffi::log(ffi::LOG_ERROR, "meshfence: context table busy at create");
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> u32 {
    // Take the root out while it loads, so host calls never meet a borrowed
    // table; put it back whatever happens.
    let Some(Some(mut root)) = with(|c| c.roots.remove(&context_id)) else {
        ffi::log(
            ffi::LOG_ERROR,
            "meshfence: configure for an unknown context",
        );
        return 0;
    };
    let ok = root.on_configure(plugin_configuration_size);
    let _ = with(|c| c.roots.insert(context_id, root));
    u32::from(ok)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    let stream = with(|c| c.streams.get(&context_id).map(Stream::share)).flatten();
    let action = match stream {
        Some(stream) => stream.on_request_headers(),
        // Unknown stream: deny, never continue unchecked.
        None => Root::default().new_stream().on_request_headers(),
    };
    action as u32
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    let _ = with(|c| {
        if c.streams.remove(&context_id).is_none() {
            c.roots.remove(&context_id);
        }
    });
}
