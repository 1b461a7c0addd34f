// Checking an audit entry's inclusion in the signed log, in the browser, with WebCrypto only.
//
//   leaf hash   SHA-256(0x00 || entry bytes)                         (RFC 9162 §2.1.1)
//   node hash   SHA-256(0x01 || left || right)
//   inclusion   walk the audit path from the leaf to the root          (RFC 9162 §2.1.3.2)
//   checkpoint  C2SP signed note: text, a blank line, signature lines "— name base64(keyid || sig)";
//               the log's Ed25519 signature covers the text up to and including the newline
//               before the blank line; the key id is SHA-256(name || 0x0A || 0x01 || public key)[:4]
//   cosignature a witness signs "cosignature/v1\ntime <t>\n" + checkpoint text; its signature is
//               keyid (type 0x04) || u64 big-endian timestamp || Ed25519 signature
//
// Every check throws a ProofFailure naming what failed; nothing here trusts the server's word.
"use strict";

const XiezhiProof = (() => {
  const DASH = "\u2014 ";
  const ED25519 = 0x01;
  const COSIGNATURE_V1 = 0x04;

  class ProofFailure extends Error {}

  function b64decode(text, what) {
    let binary;
    try {
      binary = atob(text);
    } catch (_) {
      throw new ProofFailure(`${what} is not valid base64`);
    }
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  function equal(a, b) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const leafHash = (entry) => sha256(concat(Uint8Array.of(0), entry));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  // RFC 9162 §2.1.3.2: the root a proof leads to from leaf `index` of a tree of `size` leaves.
  async function rootFromInclusion(index, size, leaf, proof) {
    if (!(index >= 0 && index < size)) throw new ProofFailure(`entry ${index} is not in a tree of ${size}`);
    let fn = index;
    let sn = size - 1;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0) throw new ProofFailure("the inclusion proof is longer than the tree is deep");
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) {
            fn = Math.floor(fn / 2);
            sn = Math.floor(sn / 2);
          }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new ProofFailure("the inclusion proof is shorter than the tree is deep");
    return r;
  }

  function keyId(name, kind, publicKey) {
    return sha256(concat(new TextEncoder().encode(name + "\n"), Uint8Array.of(kind), publicKey));
  }

  // A verifier key "name+hexid+base64(type || public key)", its id checked.
  async function parseVerifierKey(vkey, kind) {
    // Only the first two '+' separate: base64 key material may itself hold '+'.
    const text = vkey.trim();
    const first = text.indexOf("+");
    const second = text.indexOf("+", first + 1);
    if (first < 1 || second < 0) throw new ProofFailure("a verifier key has the form name+keyid+base64key");
    const [name, hexId, material] = [text.slice(0, first), text.slice(first + 1, second), text.slice(second + 1)];
    const raw = b64decode(material, "the verifier key");
    if (raw.length !== 33 || raw[0] !== kind) throw new ProofFailure(`the key of ${name} is not of type ${kind}`);
    const publicKey = raw.slice(1);
    const id = (await keyId(name, kind, publicKey)).slice(0, 4);
    const hex = Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("");
    if (hex !== hexId.toLowerCase()) throw new ProofFailure(`the key id of ${name} does not match its key`);
    return { name, id, publicKey };
  }

  // A signed note: its text and its signature lines (name, 4-byte key id, rest).
  function splitNote(note) {
    const cut = note.lastIndexOf("\n\n");
    if (cut < 0 || !note.endsWith("\n")) throw new ProofFailure("the checkpoint is not a signed note");
    const text = note.slice(0, cut + 1);
    const lines = note.slice(cut + 2).split("\n").filter((line) => line !== "");
    const signatures = lines.map((line) => {
      if (!line.startsWith(DASH)) throw new ProofFailure("a note signature line must start with an em dash");
      const rest = line.slice(DASH.length);
      const space = rest.indexOf(" ");
      const raw = b64decode(rest.slice(space + 1), "a note signature");
      if (space < 1 || raw.length < 5) throw new ProofFailure("a note signature line is malformed");
      return { name: rest.slice(0, space), id: raw.slice(0, 4), body: raw.slice(4) };
    });
    return { text, signatures };
  }

  async function ed25519Verify(publicKey, signature, message) {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  }

  function findSignature(signatures, key) {
    return signatures.find((s) => s.name === key.name && equal(s.id, key.id));
  }

  // Verify the log's signature on a checkpoint note; return {origin, size, root, text, signatures}.
  async function openCheckpoint(note, logKey) {
    const { text, signatures } = splitNote(note);
    const line = findSignature(signatures, logKey);
    if (!line) throw new ProofFailure(`the checkpoint carries no signature by the log key ${logKey.name}`);
    const signed = await ed25519Verify(logKey.publicKey, line.body, new TextEncoder().encode(text));
    if (!signed) throw new ProofFailure(`the log's signature (${logKey.name}) on the checkpoint does not verify`);
    const fields = text.split("\n");
    if (fields.length < 4) throw new ProofFailure("the checkpoint text is not origin, size and root");
    const [origin, size, root] = fields;
    if (origin !== logKey.name) throw new ProofFailure(`the checkpoint's origin ${origin} is not the log ${logKey.name}`);
    if (!/^(0|[1-9][0-9]*)$/.test(size)) throw new ProofFailure("the checkpoint's size is not a number");
    return { origin, size: Number(size), root: b64decode(root, "the checkpoint root"), text, signatures };
  }

  // Names of the witnesses whose cosignature on the checkpoint verifies.
  async function cosigners(checkpoint, witnesses) {
    const names = [];
    for (const [connector, vkey] of Object.entries(witnesses)) {
      const key = await parseVerifierKey(vkey, COSIGNATURE_V1);
      const line = findSignature(checkpoint.signatures, key);
      if (!line) continue;
      if (line.body.length !== 72) throw new ProofFailure(`the cosignature of ${connector} is malformed`);
      const time = new DataView(line.body.buffer, line.body.byteOffset, 8).getBigUint64(0).toString();
      const message = new TextEncoder().encode(`cosignature/v1\ntime ${time}\n${checkpoint.text}`);
      if (!(await ed25519Verify(key.publicKey, line.body.slice(8), message))) {
        throw new ProofFailure(`the cosignature of ${connector} does not verify`);
      }
      names.push(connector);
    }
    return names;
  }

  // The whole check: entry text → leaf → root → signed checkpoint → cosignatures.
  // `proof` is the /v1/audit/proofs/inclusion answer, `keys` the /v1/audit/log-key answer.
  async function verifyInclusion(entryText, storedLeafHash, proof, keys) {
    const logKey = await parseVerifierKey(keys.log_key, ED25519);
    const leaf = await leafHash(new TextEncoder().encode(entryText));
    if (!equal(leaf, b64decode(proof.leaf_hash, "the leaf hash"))) {
      throw new ProofFailure("the entry's text does not hash to the leaf hash in the proof: the entry was changed");
    }
    if (storedLeafHash && !equal(leaf, b64decode(storedLeafHash, "the stored leaf hash"))) {
      throw new ProofFailure("the entry's text does not hash to the leaf hash the log stores");
    }
    const path = proof.proof.map((h) => b64decode(h, "a proof hash"));
    const root = await rootFromInclusion(proof.seq, proof.tree_size, leaf, path);
    const checkpoint = await openCheckpoint(proof.checkpoint, logKey);
    if (checkpoint.size !== proof.tree_size) {
      throw new ProofFailure(`the proof is for size ${proof.tree_size}, the checkpoint for ${checkpoint.size}`);
    }
    if (!equal(root, checkpoint.root)) {
      throw new ProofFailure(`the inclusion proof does not lead to the root of signed checkpoint ${checkpoint.size}`);
    }
    return { size: checkpoint.size, signedBy: logKey.name, cosignedBy: await cosigners(checkpoint, keys.witnesses) };
  }

  return { ProofFailure, verifyInclusion, rootFromInclusion, leafHash, parseVerifierKey, openCheckpoint };
})();
