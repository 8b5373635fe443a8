//! Storage glue: the module data type and its callbacks, raw key access, the id clock, and
//! replication of effects.

pub mod arg;
pub mod bus;
pub mod datatype;
pub mod handover;
pub mod ids;
pub mod key;
pub mod landing;
pub mod lease;
pub mod notify;
pub mod queues;
pub mod replicate;
pub mod scan;
pub mod server;
pub mod tagindex;
pub mod unlinked;
pub mod wbqueue;
