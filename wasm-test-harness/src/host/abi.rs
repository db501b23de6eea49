//! The `env.proxy_*` imports of proxy-wasm ABI 0.2.1.

use std::collections::HashSet;

use wasmi::{Caller, Error, ExternType, Linker, Module, Val, ValType};

use super::{pairs, LocalReply, LogLine, Mutation, State};

/// proxy-wasm status codes (`WasmResult`).
pub mod status {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const BAD_ARGUMENT: u32 = 2;
    pub const SERIALIZATION_FAILURE: u32 = 3;
    pub const INVALID_MEMORY_ACCESS: u32 = 6;
    pub const INTERNAL_FAILURE: u32 = 10;
    pub const UNIMPLEMENTED: u32 = 12;
}
use status::*;

type C<'a> = Caller<'a, State>;

/// Records the call; a configured fault answers instead of the host.
fn enter(caller: &mut C<'_>, name: &str) -> Option<u32> {
    caller.data_mut().calls.push(name.to_string());
    caller.data().faults.get(name).copied()
}

fn read(caller: &C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let memory = caller.data().memory?;
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    memory.data(caller).get(start..end).map(<[u8]>::to_vec)
}

fn write(caller: &mut C<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(memory) = caller.data().memory else {
        return false;
    };
    memory.write(caller, ptr as u32 as usize, bytes).is_ok()
}

/// Copies `bytes` into a fresh module allocation and stores its address and
/// size at the two out-pointers, as every `proxy_get_*` does.
fn give(caller: &mut C<'_>, bytes: &[u8], ret_data: i32, ret_size: i32) -> Result<u32, Error> {
    let Some(malloc) = caller.data().malloc else {
        return Ok(INTERNAL_FAILURE);
    };
    let ptr = malloc.call(&mut *caller, bytes.len() as i32)?;
    if ptr == 0 && !bytes.is_empty() {
        return Ok(INTERNAL_FAILURE);
    }
    if !write(caller, ptr, bytes)
        || !write(caller, ret_data, &(ptr as u32).to_le_bytes())
        || !write(caller, ret_size, &(bytes.len() as u32).to_le_bytes())
    {
        return Ok(INVALID_MEMORY_ACCESS);
    }
    Ok(OK)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

const REQUEST_HEADERS: i32 = 0;

fn names_equal(a: &str, b: &[u8]) -> bool {
    a.as_bytes().eq_ignore_ascii_case(b)
}

macro_rules! import {
    ($linker:ident, $set:ident, $name:literal, $f:expr) => {
        $set.insert($name);
        $linker.func_wrap("env", $name, $f)?;
    };
}

/// Defines every import the host implements, and an `Unimplemented` answer
/// for any other function the module imports.
pub(crate) fn define(linker: &mut Linker<State>, module: &Module) -> Result<(), Error> {
    let mut done: HashSet<&'static str> = HashSet::new();

    import!(linker, done, "proxy_log", |mut c: C<'_>,
                                        level: i32,
                                        ptr: i32,
                                        len: i32|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_log") {
            return s as i32;
        }
        let Some(msg) = read(&c, ptr, len) else {
            return INVALID_MEMORY_ACCESS as i32;
        };
        c.data_mut().pending_logs.push(LogLine {
            level: level as u32,
            message: text(msg),
        });
        OK as i32
    });

    import!(linker, done, "proxy_get_log_level", |mut c: C<'_>,
                                                  ret: i32|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_get_log_level") {
            return s as i32;
        }
        let level = c.data().log_level;
        if write(&mut c, ret, &level.to_le_bytes()) {
            OK as i32
        } else {
            INVALID_MEMORY_ACCESS as i32
        }
    });

    import!(
        linker,
        done,
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> i32 {
            if let Some(s) = enter(&mut c, "proxy_get_current_time_nanoseconds") {
                return s as i32;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            if write(&mut c, ret, &now.to_le_bytes()) {
                OK as i32
            } else {
                INVALID_MEMORY_ACCESS as i32
            }
        }
    );

    import!(
        linker,
        done,
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, ms: i32| -> i32 {
            if let Some(s) = enter(&mut c, "proxy_set_tick_period_milliseconds") {
                return s as i32;
            }
            c.data_mut().tick_period_ms = ms as u32;
            OK as i32
        }
    );

    import!(linker, done, "proxy_get_buffer_bytes", |mut c: C<'_>,
                                                     kind: i32,
                                                     start: i32,
                                                     max: i32,
                                                     ret_data: i32,
                                                     ret_size: i32|
     -> Result<
        i32,
        Error,
    > {
        if let Some(s) = enter(&mut c, "proxy_get_buffer_bytes") {
            return Ok(s as i32);
        }
        let buffer = match kind {
            6 => c.data().vm_config.clone(),
            7 => c.data().plugin_config.clone(),
            _ => None,
        };
        let Some(buffer) = buffer.filter(|b| !b.is_empty()) else {
            return Ok(NOT_FOUND as i32);
        };
        let start = (start as u32 as usize).min(buffer.len());
        let end = start.saturating_add(max as u32 as usize).min(buffer.len());
        let slice = buffer[start..end].to_vec();
        Ok(give(&mut c, &slice, ret_data, ret_size)? as i32)
    });

    import!(
        linker,
        done,
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ret_data: i32, ret_size: i32| -> Result<i32, Error> {
            if let Some(s) = enter(&mut c, "proxy_get_header_map_pairs") {
                return Ok(s as i32);
            }
            let encoded = if map == REQUEST_HEADERS {
                pairs::encode(&c.data().request_headers)
            } else {
                pairs::encode::<&[u8], &[u8]>(&[])
            };
            Ok(give(&mut c, &encoded, ret_data, ret_size)? as i32)
        }
    );

    import!(linker, done, "proxy_set_header_map_pairs", |mut c: C<
        '_,
    >,
                                                         map: i32,
                                                         ptr: i32,
                                                         len: i32|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_set_header_map_pairs") {
            return s as i32;
        }
        if map != REQUEST_HEADERS {
            return BAD_ARGUMENT as i32;
        }
        let Some(bytes) = read(&c, ptr, len) else {
            return INVALID_MEMORY_ACCESS as i32;
        };
        let Some(decoded) = pairs::decode(&bytes) else {
            return BAD_ARGUMENT as i32;
        };
        let map: Vec<(String, Vec<u8>)> = decoded.into_iter().map(|(k, v)| (text(k), v)).collect();
        let state = c.data_mut();
        state.request_headers = map.clone();
        state.mutations.push(Mutation::SetAll(map));
        OK as i32
    });

    import!(
        linker,
        done,
        "proxy_get_header_map_value",
        |mut c: C<'_>,
         map: i32,
         kptr: i32,
         klen: i32,
         ret_data: i32,
         ret_size: i32|
         -> Result<i32, Error> {
            if let Some(s) = enter(&mut c, "proxy_get_header_map_value") {
                return Ok(s as i32);
            }
            let Some(key) = read(&c, kptr, klen) else {
                return Ok(INVALID_MEMORY_ACCESS as i32);
            };
            if map != REQUEST_HEADERS {
                return Ok(NOT_FOUND as i32);
            }
            let found = c
                .data()
                .request_headers
                .iter()
                .find(|(n, _)| names_equal(n, &key))
                .map(|(_, v)| v.clone());
            match found {
                None => Ok(NOT_FOUND as i32),
                Some(v) => Ok(give(&mut c, &v, ret_data, ret_size)? as i32),
            }
        }
    );

    import!(linker, done, "proxy_add_header_map_value", |mut c: C<
        '_,
    >,
                                                         map: i32,
                                                         kptr: i32,
                                                         klen: i32,
                                                         vptr: i32,
                                                         vlen: i32|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_add_header_map_value") {
            return s as i32;
        }
        let (Some(k), Some(v)) = (read(&c, kptr, klen), read(&c, vptr, vlen)) else {
            return INVALID_MEMORY_ACCESS as i32;
        };
        if map != REQUEST_HEADERS {
            return BAD_ARGUMENT as i32;
        }
        let k = text(k);
        let state = c.data_mut();
        state.request_headers.push((k.clone(), v.clone()));
        state.mutations.push(Mutation::Add(k, v));
        OK as i32
    });

    import!(
        linker,
        done,
        "proxy_replace_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> i32 {
            if let Some(s) = enter(&mut c, "proxy_replace_header_map_value") {
                return s as i32;
            }
            let (Some(k), Some(v)) = (read(&c, kptr, klen), read(&c, vptr, vlen)) else {
                return INVALID_MEMORY_ACCESS as i32;
            };
            if map != REQUEST_HEADERS {
                return BAD_ARGUMENT as i32;
            }
            let k = text(k);
            let state = c.data_mut();
            // Envoy's older `setCopy`: the first copy changes, others stay.
            match state
                .request_headers
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(&k))
            {
                Some(slot) => slot.1 = v.clone(),
                None => state.request_headers.push((k.clone(), v.clone())),
            }
            state.mutations.push(Mutation::Replace(k, v));
            OK as i32
        }
    );

    import!(
        linker,
        done,
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32| -> i32 {
            if let Some(s) = enter(&mut c, "proxy_remove_header_map_value") {
                return s as i32;
            }
            let Some(k) = read(&c, kptr, klen) else {
                return INVALID_MEMORY_ACCESS as i32;
            };
            if map != REQUEST_HEADERS {
                return BAD_ARGUMENT as i32;
            }
            let state = c.data_mut();
            state.request_headers.retain(|(n, _)| !names_equal(n, &k));
            state.mutations.push(Mutation::Remove(text(k)));
            OK as i32
        }
    );

    import!(linker, done, "proxy_get_property", |mut c: C<'_>,
                                                 pptr: i32,
                                                 plen: i32,
                                                 ret_data: i32,
                                                 ret_size: i32|
     -> Result<
        i32,
        Error,
    > {
        if let Some(s) = enter(&mut c, "proxy_get_property") {
            return Ok(s as i32);
        }
        let Some(path) = read(&c, pptr, plen) else {
            return Ok(INVALID_MEMORY_ACCESS as i32);
        };
        let key: Vec<String> = path.split(|&b| b == 0).map(|s| text(s.to_vec())).collect();
        let state = c.data();
        let found = state
            .request_properties
            .get(&key)
            .or_else(|| state.properties.get(&key))
            .cloned();
        match found {
            None => Ok(NOT_FOUND as i32),
            Some(v) => Ok(give(&mut c, &v, ret_data, ret_size)? as i32),
        }
    });

    import!(linker, done, "proxy_set_property", |mut c: C<'_>,
                                                 pptr: i32,
                                                 plen: i32,
                                                 vptr: i32,
                                                 vlen: i32|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_set_property") {
            return s as i32;
        }
        let (Some(path), Some(v)) = (read(&c, pptr, plen), read(&c, vptr, vlen)) else {
            return INVALID_MEMORY_ACCESS as i32;
        };
        let key: Vec<String> = path.split(|&b| b == 0).map(|s| text(s.to_vec())).collect();
        c.data_mut().request_properties.insert(key, v);
        OK as i32
    });

    import!(linker, done, "proxy_send_local_response", |mut c: C<'_>,
                                                        code: i32,
                                                        dptr: i32,
                                                        dlen: i32,
                                                        bptr: i32,
                                                        blen: i32,
                                                        hptr: i32,
                                                        hlen: i32,
                                                        _grpc: i32|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_send_local_response") {
            return s as i32;
        }
        let details = if dlen == 0 {
            Some(Vec::new())
        } else {
            read(&c, dptr, dlen)
        };
        let body = if blen == 0 {
            Some(Vec::new())
        } else {
            read(&c, bptr, blen)
        };
        let headers = if hlen == 0 {
            Some(Vec::new())
        } else {
            read(&c, hptr, hlen)
        };
        let (Some(details), Some(body), Some(headers)) = (details, body, headers) else {
            return INVALID_MEMORY_ACCESS as i32;
        };
        let Some(headers) = pairs::decode(&headers) else {
            return BAD_ARGUMENT as i32;
        };
        let state = c.data_mut();
        if state.local_reply.is_some() {
            // Envoy refuses a second local reply on one stream.
            return BAD_ARGUMENT as i32;
        }
        state.local_reply = Some(LocalReply {
            status: code as u32,
            details: text(details),
            body,
            headers: headers.into_iter().map(|(k, v)| (text(k), v)).collect(),
        });
        OK as i32
    });

    import!(linker, done, "proxy_define_metric", |mut c: C<'_>,
                                                  kind: i32,
                                                  nptr: i32,
                                                  nlen: i32,
                                                  ret: i32|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_define_metric") {
            return s as i32;
        }
        let Some(name) = read(&c, nptr, nlen) else {
            return INVALID_MEMORY_ACCESS as i32;
        };
        if !(0..=2).contains(&kind) {
            return BAD_ARGUMENT as i32;
        }
        let name = text(name);
        let metrics = &mut c.data_mut().metrics;
        let id = match metrics.iter().position(|(n, _, _)| *n == name) {
            Some(i) => i,
            None => {
                metrics.push((name, kind as u32, 0));
                metrics.len() - 1
            }
        };
        if write(&mut c, ret, &(id as u32).to_le_bytes()) {
            OK as i32
        } else {
            INVALID_MEMORY_ACCESS as i32
        }
    });

    import!(linker, done, "proxy_increment_metric", |mut c: C<'_>,
                                                     id: i32,
                                                     offset: i64|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_increment_metric") {
            return s as i32;
        }
        match c.data_mut().metrics.get_mut(id as u32 as usize) {
            Some(m) => {
                m.2 = m.2.saturating_add(offset);
                OK as i32
            }
            None => NOT_FOUND as i32,
        }
    });

    import!(linker, done, "proxy_record_metric", |mut c: C<'_>,
                                                  id: i32,
                                                  value: i64|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_record_metric") {
            return s as i32;
        }
        match c.data_mut().metrics.get_mut(id as u32 as usize) {
            Some(m) => {
                m.2 = value;
                OK as i32
            }
            None => NOT_FOUND as i32,
        }
    });

    import!(linker, done, "proxy_get_metric", |mut c: C<'_>,
                                               id: i32,
                                               ret: i32|
     -> i32 {
        if let Some(s) = enter(&mut c, "proxy_get_metric") {
            return s as i32;
        }
        let Some(value) = c.data().metrics.get(id as u32 as usize).map(|m| m.2) else {
            return NOT_FOUND as i32;
        };
        if write(&mut c, ret, &(value as u64).to_le_bytes()) {
            OK as i32
        } else {
            INVALID_MEMORY_ACCESS as i32
        }
    });

    for name in ["proxy_done", "proxy_continue_stream", "proxy_close_stream"] {
        done.insert(name);
    }
    linker.func_wrap("env", "proxy_done", |mut c: C<'_>| -> i32 {
        enter(&mut c, "proxy_done").map_or(OK as i32, |s| s as i32)
    })?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, _t: i32| -> i32 {
            enter(&mut c, "proxy_continue_stream").map_or(OK as i32, |s| s as i32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: C<'_>, _t: i32| -> i32 {
            enter(&mut c, "proxy_close_stream").map_or(OK as i32, |s| s as i32)
        },
    )?;

    // Everything else the module imports: recorded, and answered with
    // `Unimplemented` (or zero, for a function that returns no status).
    for import in module.imports() {
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        if import.module() == "env" && done.contains(import.name()) {
            continue;
        }
        let name = format!("{}.{}", import.module(), import.name());
        let result_types: Vec<ValType> = ty.results().to_vec();
        linker.func_new(
            import.module(),
            import.name(),
            ty.clone(),
            move |mut c, _params, results| {
                c.data_mut().calls.push(name.clone());
                for (slot, ty) in results.iter_mut().zip(&result_types) {
                    *slot = match ty {
                        ValType::I32 => Val::I32(UNIMPLEMENTED as i32),
                        ValType::I64 => Val::I64(0),
                        ValType::F32 => Val::F32(0f32.into()),
                        ValType::F64 => Val::F64(0f64.into()),
                        other => Val::default_for_ty(*other),
                    };
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}
