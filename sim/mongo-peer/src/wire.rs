//! OP_MSG framing (<https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/>).
//!
//! Only OP_MSG is spoken: the 3.x driver sends even its first handshake (`isMaster` with
//! `helloOk: true`) as OP_MSG, so legacy OP_QUERY/OP_REPLY would serve nobody we test with.
//! Compression is never advertised in `hello`, so OP_COMPRESSED never arrives either.

use std::io;

use bson::{Bson, Document};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const OP_MSG: i32 = 2013;
const CHECKSUM_PRESENT: u32 = 1;
/// On a request: the client wants no reply (unacknowledged write).
pub const MORE_TO_COME: u32 = 1 << 1;
/// `hello` replies are never streamed with moreToCome: the driver then simply sends the next
/// awaitable `hello` itself, which is allowed by the SDAM monitoring spec.
pub const MAX_MESSAGE_BYTES: usize = 48_000_000;

#[derive(Debug)]
pub struct Message {
    pub request_id: i32,
    pub flags: u32,
    /// The body with each kind-1 document sequence folded in as an array field, which is how
    /// mongod itself treats `documents`/`updates`/`deletes` sequences.
    pub command: Document,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn le_i32(b: &[u8], at: usize) -> io::Result<i32> {
    let s = b.get(at..at + 4).ok_or_else(|| bad("truncated message"))?;
    Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads one message; `Ok(None)` on a clean end of stream between messages.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Message>> {
    let mut header = [0u8; 16];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = le_i32(&header, 0)?;
    let request_id = le_i32(&header, 4)?;
    let op_code = le_i32(&header, 12)?;
    let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
    if !(21..=MAX_MESSAGE_BYTES).contains(&len) {
        return Err(bad(format!("message length {len} out of range")));
    }
    let mut body = vec![0u8; len - 16];
    r.read_exact(&mut body).await?;
    if op_code != OP_MSG {
        return Err(bad(format!("unsupported opcode {op_code}; only OP_MSG is spoken")));
    }
    let (flags, command) = parse_op_msg(&body)?;
    Ok(Some(Message { request_id, flags, command }))
}

fn parse_op_msg(body: &[u8]) -> io::Result<(u32, Document)> {
    let flags = le_i32(body, 0)? as u32;
    let end = if flags & CHECKSUM_PRESENT != 0 { body.len().saturating_sub(4) } else { body.len() };
    let mut pos = 4;
    let mut command: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
    while pos < end {
        let kind = body[pos];
        pos += 1;
        let size = usize::try_from(le_i32(body, pos)?).map_err(|_| bad("negative size"))?;
        let section = body.get(pos..pos + size).ok_or_else(|| bad("section overruns message"))?;
        match kind {
            0 => command = Some(Document::from_reader(section).map_err(|e| bad(e.to_string()))?),
            1 => {
                let rest = &section[4..];
                let nul = rest.iter().position(|b| *b == 0).ok_or_else(|| bad("bad identifier"))?;
                let ident = String::from_utf8_lossy(&rest[..nul]).into_owned();
                let mut docs = Vec::new();
                let mut p = nul + 1;
                while p < rest.len() {
                    let dlen = usize::try_from(le_i32(rest, p)?).map_err(|_| bad("bad doc"))?;
                    let raw = rest.get(p..p + dlen).ok_or_else(|| bad("doc overruns section"))?;
                    docs.push(Bson::Document(Document::from_reader(raw).map_err(|e| bad(e.to_string()))?));
                    p += dlen;
                }
                sequences.push((ident, docs));
            }
            k => return Err(bad(format!("unknown OP_MSG section kind {k}"))),
        }
        pos += size;
    }
    let mut command = command.ok_or_else(|| bad("OP_MSG without a body section"))?;
    for (ident, docs) in sequences {
        command.insert(ident, docs);
    }
    Ok((flags, command))
}

pub fn encode(request_id: i32, response_to: i32, doc: &Document) -> io::Result<Vec<u8>> {
    let mut payload = Vec::new();
    doc.to_writer(&mut payload).map_err(|e| bad(e.to_string()))?;
    let len = 16 + 4 + 1 + payload.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as i32).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&OP_MSG.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// One command round trip on an open stream (member-to-member traffic).
pub async fn call<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request_id: i32, doc: &Document) -> io::Result<Document> {
    stream.write_all(&encode(request_id, 0, doc)?).await?;
    match read_message(stream).await? {
        Some(m) => Ok(m.command),
        None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection")),
    }
}
