//! The host calls the filter makes, declared against the proxy-wasm ABI 0.2.1
//! directly.
//!
//! The SDK's `proxy_wasm::hostcalls` functions return `Result`, but still
//! `panic!` on any status they do not expect (and `get_map` unwraps UTF-8), and
//! a panic is a trap: 503s, or a bypass under `FAIL_OPEN` (DESIGN §10). The
//! wrappers here turn every status into a `Result`, and hand host buffers back
//! as `Vec<u8>` so the header map can be read without copying it again.
//!
//! Buffers the host returns were allocated by calling the module's `malloc`
//! export (proxy-wasm's allocator, a boxed slice of exactly the requested
//! length), so they are released as a `Vec` of that length and capacity, as the
//! SDK itself does.
#![allow(unsafe_code)]
#![allow(clashing_extern_declarations)]

use alloc::vec::Vec;
use core::ptr::{null, null_mut};

/// A proxy-wasm status other than `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

pub const NOT_FOUND: u32 = 1;

pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;

pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
pub const MAP_REQUEST_HEADERS: u32 = 0;
pub const METRIC_COUNTER: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

fn status(code: u32) -> Result<(), HostError> {
    if code == 0 {
        Ok(())
    } else {
        Err(HostError(code))
    }
}

/// Takes ownership of a buffer the host allocated with our `malloc`.
fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the host filled `data` with a pointer our exported allocator
    // returned for exactly `size` bytes (a `Box<[u8]>` of that length), and
    // gave up ownership of it; nobody else frees it.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Writes a log line; a host that refuses it is ignored.
pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length describe a live `&str`.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// A property by its serialized path (segments separated by NUL).
/// `Ok(None)` when the host has no such property.
pub fn get_property(path: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: the path is a live slice; the out-pointers are valid locals.
    let code = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match code {
        0 => Ok(owned(data, size)),
        NOT_FOUND => Ok(None),
        other => Err(HostError(other)),
    }
}

/// The plugin configuration, up to `size` bytes.
pub fn plugin_configuration(size: usize) -> Result<Option<Vec<u8>>, HostError> {
    let mut data = null_mut();
    let mut len = 0usize;
    // SAFETY: the out-pointers are valid locals.
    let code = unsafe {
        proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, &mut data, &mut len)
    };
    match code {
        0 => Ok(owned(data, len)),
        NOT_FOUND => Ok(None),
        other => Err(HostError(other)),
    }
}

/// Every request header, in the proxy-wasm pairs encoding.
pub fn request_header_pairs() -> Result<Vec<u8>, HostError> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: the out-pointers are valid locals.
    status(unsafe { proxy_get_header_map_pairs(MAP_REQUEST_HEADERS, &mut data, &mut size) })?;
    Ok(owned(data, size).unwrap_or_default())
}

pub fn add_request_header(name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: both slices are live for the call.
    status(unsafe {
        proxy_add_header_map_value(
            MAP_REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn replace_request_header(name: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: both slices are live for the call.
    status(unsafe {
        proxy_replace_header_map_value(
            MAP_REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_request_header(name: &str) -> Result<(), HostError> {
    // SAFETY: the slice is live for the call.
    status(unsafe { proxy_remove_header_map_value(MAP_REQUEST_HEADERS, name.as_ptr(), name.len()) })
}

/// Sends a local reply with no extra headers.
pub fn send_local_response(status_code: u16, details: &str, body: &str) -> Result<(), HostError> {
    // The pairs encoding of an empty header map: a zero count.
    const NO_HEADERS: [u8; 4] = [0; 4];
    // SAFETY: every slice is live for the call.
    status(unsafe {
        proxy_send_local_response(
            u32::from(status_code),
            if details.is_empty() {
                null()
            } else {
                details.as_ptr()
            },
            details.len(),
            body.as_ptr(),
            body.len(),
            NO_HEADERS.as_ptr(),
            NO_HEADERS.len(),
            -1,
        )
    })
}

pub fn define_counter(name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: the name is live; the out-pointer is a valid local.
    status(unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment(metric_id: u32) {
    // SAFETY: no pointers.
    let _ = unsafe { proxy_increment_metric(metric_id, 1) };
}
