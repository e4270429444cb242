//! Parts of the `ingest_load` bench: its HTTP client, child processes,
//! resident-memory sampling, allocator variants and VictoriaMetrics.

pub mod alloc;
pub mod http;
pub mod load;
pub mod procs;
pub mod report;
pub mod rss;
pub mod servers;
pub mod vm;
