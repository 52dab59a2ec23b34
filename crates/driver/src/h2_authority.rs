//! A relay in front of the kubelet plugin-registration server that rewrites the HTTP/2
//! `:authority` of every request to `localhost`.
//!
//! Written by hand because the libraries disagree: kubelet's plugin watcher (grpc-go, dialling a
//! bare socket path) sends the socket *path* as `:authority`, and `h2` (under tonic) rejects
//! such a request with `PROTOCOL_ERROR` before any service sees it, with no option to relax the
//! check. Seen against kubelet v1.34.4: every `GetInfo` failed with "stream terminated by
//! RST_STREAM with error code: PROTOCOL_ERROR". kubelet's CSI client already sends `localhost`,
//! so only the registration socket needs this.
//!
//! The relay passes every byte through except request header blocks (HEADERS + CONTINUATION
//! frames): those are HPACK-decoded with the client's table state and re-encoded, with
//! `:authority` replaced, by an encoder whose state the server's decoder follows.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which the server never lowers.
const MAX_FRAME: usize = 16_384;
/// The largest header block the relay assembles (kubelet's are a few hundred bytes).
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// What `:authority` becomes, as grpc-go sends for `unix://` targets.
pub const AUTHORITY: &[u8] = b"localhost";

fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Copies HTTP/2 client bytes from `client` to `server`, rewriting `:authority` in request
/// header blocks, until `client` closes. Returns an error on malformed HTTP/2 (the connection is
/// then dropped, as the server would do).
pub async fn rewrite_client_stream<R, W>(mut client: R, mut server: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    client.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(invalid("not an HTTP/2 connection preface"));
    }
    server.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    loop {
        let mut head = [0u8; 9];
        match client.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let (len, kind, flags, stream) = parse_head(&head);
        let mut payload = vec![0u8; len];
        client.read_exact(&mut payload).await?;
        if kind != FRAME_HEADERS {
            server.write_all(&head).await?;
            server.write_all(&payload).await?;
            server.flush().await?;
            continue;
        }
        let mut block = header_fragment(&payload, flags)?.to_vec();
        let mut end_headers = flags & FLAG_END_HEADERS != 0;
        while !end_headers {
            let mut head = [0u8; 9];
            client.read_exact(&mut head).await?;
            let (len, kind, cflags, cstream) = parse_head(&head);
            if kind != FRAME_CONTINUATION || cstream != stream {
                return Err(invalid("a header block was interrupted by another frame"));
            }
            if block.len() + len > MAX_HEADER_BLOCK {
                return Err(invalid("header block too large"));
            }
            let start = block.len();
            block.resize(start + len, 0);
            client.read_exact(&mut block[start..]).await?;
            end_headers = cflags & FLAG_END_HEADERS != 0;
        }
        let headers = decoder
            .decode(&block)
            .map_err(|e| invalid(format!("HPACK: {e:?}")))?;
        let rewritten = encoder.encode(headers.iter().map(|(name, value)| {
            let value: &[u8] = if name.as_slice() == b":authority" {
                AUTHORITY
            } else {
                value
            };
            (name.as_slice(), value)
        }));
        write_header_block(&mut server, stream, flags & FLAG_END_STREAM, &rewritten).await?;
        server.flush().await?;
    }
    server.shutdown().await
}

fn parse_head(head: &[u8; 9]) -> (usize, u8, u8, u32) {
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    (len, head[3], head[4], stream)
}

/// The header block fragment of a HEADERS frame payload: padding and priority removed.
fn header_fragment(payload: &[u8], flags: u8) -> std::io::Result<&[u8]> {
    let mut body = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&p, rest) = body
            .split_first()
            .ok_or_else(|| invalid("HEADERS frame: missing pad length"))?;
        pad = usize::from(p);
        body = rest;
    }
    if flags & FLAG_PRIORITY != 0 {
        body = body
            .get(5..)
            .ok_or_else(|| invalid("HEADERS frame: truncated priority"))?;
    }
    body.get(..body.len().saturating_sub(pad))
        .filter(|_| pad <= body.len())
        .ok_or_else(|| invalid("HEADERS frame: padding longer than the payload"))
}

async fn write_header_block<W: AsyncWrite + Unpin>(
    out: &mut W,
    stream: u32,
    end_stream: u8,
    block: &[u8],
) -> std::io::Result<()> {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut kind = FRAME_HEADERS;
    let mut first_flags = end_stream;
    if chunks.peek().is_none() {
        return write_frame(out, kind, first_flags | FLAG_END_HEADERS, stream, &[]).await;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = first_flags | if last { FLAG_END_HEADERS } else { 0 };
        write_frame(out, kind, flags, stream, chunk).await?;
        kind = FRAME_CONTINUATION;
        first_flags = 0;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    out: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = payload.len();
    let mut head = [0u8; 9];
    head[0] = ((len >> 16) & 0xff) as u8;
    head[1] = ((len >> 8) & 0xff) as u8;
    head[2] = (len & 0xff) as u8;
    head[3] = kind;
    head[4] = flags;
    head[5..9].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.write_all(&head).await?;
    out.write_all(payload).await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Client bytes as grpc-go sends them to a bare socket path: preface, SETTINGS, a padded
    /// HEADERS frame with priority split over a CONTINUATION, then DATA.
    pub(crate) fn kubelet_like_request(authority: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]);
        let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
            let mut f = vec![
                (payload.len() >> 16) as u8,
                (payload.len() >> 8) as u8,
                payload.len() as u8,
                kind,
                flags,
            ];
            f.extend_from_slice(&stream.to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        let split = block.len() / 2;
        let mut headers = vec![3u8]; // pad length
        headers.extend_from_slice(&[0, 0, 0, 0, 16]); // priority: no dependency, weight 16
        headers.extend_from_slice(&block[..split]);
        headers.extend_from_slice(&[0, 0, 0]);
        let mut grpc = vec![0u8];
        grpc.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        grpc.extend_from_slice(body);
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        out.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            1,
            &headers,
        ));
        out.extend(frame(
            FRAME_CONTINUATION,
            FLAG_END_HEADERS,
            1,
            &block[split..],
        ));
        out.extend(frame(0x0, FLAG_END_STREAM, 1, &grpc));
        out
    }

    #[tokio::test]
    async fn rewrites_only_the_authority() {
        let input = kubelet_like_request(
            "/var/lib/kubelet/plugins_registry/x-reg.sock",
            "/a.B/C",
            b"hi",
        );
        let mut out = Vec::new();
        rewrite_client_stream(&input[..], &mut out).await.unwrap();
        assert_eq!(&out[..24], PREFACE);
        let mut rest = &out[24..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let head: [u8; 9] = rest[..9].try_into().unwrap();
            let (len, kind, flags, stream) = parse_head(&head);
            frames.push((kind, flags, stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        assert_eq!(frames.len(), 3, "SETTINGS, one HEADERS, DATA");
        assert_eq!(frames[0].0, 0x4);
        let (kind, flags, stream, block) = &frames[1];
        assert_eq!(
            (*kind, *flags, *stream),
            (FRAME_HEADERS, FLAG_END_HEADERS, 1)
        );
        let headers = loona_hpack::Decoder::new().decode(block).unwrap();
        let get = |n: &[u8]| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get(b":authority").as_deref(), Some(AUTHORITY));
        assert_eq!(get(b":path").as_deref(), Some(&b"/a.B/C"[..]));
        assert_eq!(get(b"te").as_deref(), Some(&b"trailers"[..]));
        assert_eq!(headers.len(), 6);
        assert_eq!(
            frames[2],
            (0x0, FLAG_END_STREAM, 1, vec![0, 0, 0, 0, 2, b'h', b'i'])
        );
    }

    #[tokio::test]
    async fn refuses_malformed_input() {
        let mut out = Vec::new();
        assert!(
            rewrite_client_stream(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &mut out)
                .await
                .is_err()
        );
        // HEADERS whose padding is longer than its payload.
        let mut bad = PREFACE.to_vec();
        bad.extend_from_slice(&[
            0,
            0,
            2,
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            0,
            0,
            0,
            1,
            9,
            0,
        ]);
        assert!(
            rewrite_client_stream(&bad[..], &mut Vec::new())
                .await
                .is_err()
        );
        // An HPACK index that does not exist.
        let mut bad = PREFACE.to_vec();
        bad.extend_from_slice(&[0, 0, 1, FRAME_HEADERS, FLAG_END_HEADERS, 0, 0, 0, 1, 0xff]);
        assert!(
            rewrite_client_stream(&bad[..], &mut Vec::new())
                .await
                .is_err()
        );
    }
}
