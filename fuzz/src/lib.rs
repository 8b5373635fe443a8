//! What the fuzz targets and the seed generator share: the encoding of an argument vector in
//! a fuzz input.
//!
//! An input of the `args` target is one byte choosing the command (its index in
//! `commands::table::COMMANDS`, modulo their number), then the arguments after the name, each
//! as a length byte and its bytes (a length byte of 255: a u16 little-endian length follows).

use redis_cache::commands::table::COMMANDS;

/// The argument vector an `args` input stands for, the command's name first.
pub fn argv_from_bytes(data: &[u8]) -> Vec<Vec<u8>> {
    let Some((&which, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let name = COMMANDS[usize::from(which) % COMMANDS.len()].name;
    let mut argv = vec![name.to_bytes().to_vec()];
    while let Some((&len, tail)) = rest.split_first() {
        let (len, tail) = match (len, tail) {
            (255, [a, b, tail @ ..]) => (usize::from(u16::from_le_bytes([*a, *b])), tail),
            (255, _) => break,
            (n, tail) => (usize::from(n), tail),
        };
        let len = len.min(tail.len());
        argv.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    argv
}

/// The input `argv_from_bytes` reads as `argv` (its first element names the command).
pub fn argv_to_bytes(argv: &[&[u8]]) -> Vec<u8> {
    let name = argv[0].to_ascii_lowercase();
    let which = COMMANDS
        .iter()
        .position(|c| c.name.to_bytes() == name.as_slice())
        .expect("a command of the module");
    let mut out = vec![which as u8];
    for a in &argv[1..] {
        match a.len() {
            n if n < 255 => out.push(n as u8),
            n => {
                out.push(255);
                out.extend_from_slice(&(n.min(usize::from(u16::MAX)) as u16).to_le_bytes());
            }
        }
        out.extend_from_slice(&a[..a.len().min(usize::from(u16::MAX))]);
    }
    out
}
