'use strict';
// RTP (RFC 3550) parsing and building, just what the tap and the injector need.

const RTP_HEADER_BYTES = 12;

/**
 * True for RTCP on an rtcp-mux socket (RFC 5761 §4: packet types 192–223 sit where the RTP
 * marker+payload-type byte is).
 */
function isRtcp(buf) {
  return buf.length >= 2 && buf[1] >= 192 && buf[1] <= 223;
}

/**
 * Parse an RTP packet. Returns null when it is not RTP v2 or is truncated.
 * The payload skips CSRCs, the header-extension block (mediasoup adds the one-byte 0xBEDE block
 * when a PlainTransport consumes with the router's full capabilities; the two-byte form is skipped
 * the same way) and trailing padding.
 */
function parseRtp(buf) {
  if (buf.length < RTP_HEADER_BYTES) return null;
  const b0 = buf[0];
  if (b0 >> 6 !== 2) return null;
  const padding = (b0 & 0x20) !== 0;
  const extension = (b0 & 0x10) !== 0;
  const csrcCount = b0 & 0x0f;
  const b1 = buf[1];
  let offset = RTP_HEADER_BYTES + 4 * csrcCount;
  if (offset > buf.length) return null;
  let extensionProfile = null;
  let extensions = null;
  if (extension) {
    if (offset + 4 > buf.length) return null;
    extensionProfile = buf.readUInt16BE(offset);
    const words = buf.readUInt16BE(offset + 2);
    const blockEnd = offset + 4 + 4 * words;
    if (blockEnd > buf.length) return null;
    if (extensionProfile === 0xbede) extensions = oneByteExtensions(buf, offset + 4, blockEnd);
    offset = blockEnd;
  }
  let end = buf.length;
  if (padding) {
    const pad = buf[buf.length - 1];
    if (pad === 0 || offset + pad > buf.length) return null;
    end -= pad;
  }
  return {
    marker: (b1 & 0x80) !== 0,
    payloadType: b1 & 0x7f,
    sequenceNumber: buf.readUInt16BE(2),
    timestamp: buf.readUInt32BE(4),
    ssrc: buf.readUInt32BE(8),
    extensionProfile,
    extensions,
    payload: buf.subarray(offset, end),
  };
}

/** RFC 8285 one-byte header extension elements: Map id -> Buffer. */
function oneByteExtensions(buf, start, end) {
  const out = new Map();
  let i = start;
  while (i < end) {
    const b = buf[i];
    if (b === 0) { i += 1; continue; } // padding
    const id = b >> 4;
    const len = (b & 0x0f) + 1;
    if (id === 15 || i + 1 + len > end) break; // 15: stop parsing (RFC 8285 §4.2)
    out.set(id, buf.subarray(i + 1, i + 1 + len));
    i += 1 + len;
  }
  return out;
}

/** Build a plain RTP packet: no CSRC, no extension, no padding. */
function buildRtp({ payloadType, sequenceNumber, timestamp, ssrc, marker = false, payload }) {
  const buf = Buffer.allocUnsafe(RTP_HEADER_BYTES + payload.length);
  buf[0] = 0x80;
  buf[1] = (marker ? 0x80 : 0) | (payloadType & 0x7f);
  buf.writeUInt16BE(sequenceNumber & 0xffff, 2);
  buf.writeUInt32BE(timestamp >>> 0, 4);
  buf.writeUInt32BE(ssrc >>> 0, 8);
  payload.copy(buf, RTP_HEADER_BYTES);
  return buf;
}

/** Forward distance from sequence number a to b, modulo 2^16 (b - a). */
function seqDelta(a, b) {
  return (b - a + 0x10000) & 0xffff;
}

module.exports = { parseRtp, buildRtp, isRtcp, seqDelta };
