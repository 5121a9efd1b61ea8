package wal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Encryption at rest: the format is in format.go ("Encryption"); this file
// holds the keys.

// KeySize is the length of an encryption key: AES-256.
const KeySize = 32

// sealOverhead is what sealing adds to a payload: the nonce and the tag
// (cipher.NewGCMWithRandomNonce's Overhead).
const sealOverhead = 12 + 16

// keyIDLabel separates the key id's hash from any other use of the key.
const keyIDLabel = "vinequeue/wal key id"

// KeyID returns the id under which a key's segments are written (8 hex
// digits), as Inspect and vinewal name them: it tells which key file a
// directory needs without revealing anything useful about the key.
func KeyID(key []byte) string { return keyIDString(keyIDOf(key)) }

func keyIDOf(key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(keyIDLabel))
	h.Write(key)
	return binary.LittleEndian.Uint32(h.Sum(nil)[:4])
}

func keyIDString(id uint32) string { return fmt.Sprintf("%08x", id) }

// keyring is the keys a Log or a reader holds: at most one to seal new
// files with, and every key it may open files with, by key id. The AEADs
// are safe for concurrent use (GCM keeps no state between calls).
type keyring struct {
	seal   cipher.AEAD // nil: new files are written in the clear
	sealID uint32
	open   map[uint32]cipher.AEAD
}

// newKeyring checks the keys (KeySize bytes each) and prepares them. A
// short or long key, or two different keys with one id, is ErrKey.
func newKeyring(seal []byte, open [][]byte) (*keyring, error) {
	k := &keyring{open: map[uint32]cipher.AEAD{}}
	keys := map[uint32][]byte{}
	add := func(what string, key []byte) (cipher.AEAD, uint32, error) {
		if len(key) != KeySize {
			return nil, 0, fmt.Errorf("%w: %s is %d bytes, want %d (AES-256)", ErrKey, what, len(key), KeySize)
		}
		id := keyIDOf(key)
		if prev, ok := keys[id]; ok {
			if string(prev) != string(key) {
				// 1 in 2^32 for two random keys: refuse rather than guess.
				return nil, 0, fmt.Errorf("%w: %s has the key id %s of another key given", ErrKey, what, keyIDString(id))
			}
			return k.open[id], id, nil
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s: %v", ErrKey, what, err)
		}
		aead, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s: %v", ErrKey, what, err)
		}
		keys[id], k.open[id] = key, aead
		return aead, id, nil
	}
	if seal != nil {
		aead, id, err := add("EncryptionKey", seal)
		if err != nil {
			return nil, err
		}
		k.seal, k.sealID = aead, id
	}
	for i, key := range open {
		if _, _, err := add(fmt.Sprintf("DecryptionKeys[%d]", i), key); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// overhead is the bytes sealing adds to each record's payload sealing adds to each record (0 if none).
func (k *keyring) overhead() int {
	if k == nil || k.seal == nil {
		return 0
	}
	return sealOverhead
}

// header returns the segment header fields for a file this keyring
// writes.
func (k *keyring) header(h segmentHeader) segmentHeader {
	if k != nil && k.seal != nil {
		h.sealed, h.keyID, h.salt = true, k.sealID, 0
	} else {
		h.sealed, h.keyID, h.salt = false, 0, newSalt()
	}
	return h
}

// sealer returns the AEAD new records are sealed with (nil: none).
func (k *keyring) sealer() cipher.AEAD {
	if k == nil {
		return nil
	}
	return k.seal
}

// forHeader returns the AEAD that opens the records of a file with header
// h: nil for a file in the clear, ErrKey if no key has its id.
func (k *keyring) forHeader(h segmentHeader) (cipher.AEAD, error) {
	if !h.sealed {
		return nil, nil
	}
	if k != nil {
		if aead, ok := k.open[h.keyID]; ok {
			return aead, nil
		}
	}
	return nil, fmt.Errorf("%w: encrypted under key id %s, and no key given has that id", ErrKey, keyIDString(h.keyID))
}

// unseal returns the stored (compressed) bytes of a record read from a file
// whose records aead opens (nil: stored itself), using buf as scratch. A
// payload that does not authenticate is ErrCorrupt: its CRC checked, so it
// was altered deliberately, or written under another key with the same id.
func unseal(aead cipher.AEAD, buf []byte, h *recordHeader, stored []byte) ([]byte, []byte, error) {
	if aead == nil {
		return stored, buf, nil
	}
	if len(stored) < sealOverhead {
		return nil, buf, fmt.Errorf("%w: record %d: sealed payload of %d bytes", ErrCorrupt, h.id, len(stored))
	}
	ad := h.aad()
	buf = grow(buf, len(stored)-sealOverhead)
	out, err := aead.Open(buf[:0], nil, stored, ad[:])
	if err != nil {
		return nil, buf, fmt.Errorf("%w: record %d does not authenticate (altered, or sealed under another key with the same key id)", ErrCorrupt, h.id)
	}
	return out, buf, nil
}

// recordReader reads records' payloads: it unseals and decompresses with
// its own scratch buffers. Not safe for concurrent use.
type recordReader struct {
	limit int
	plain []byte // unsealed bytes
	raw   []byte // decompressed bytes
}

// payload returns a record's raw payload (aliasing stored or the reader's
// buffers, valid until the next call).
func (r *recordReader) payload(aead cipher.AEAD, h *recordHeader, stored []byte) ([]byte, error) {
	plain, buf, err := unseal(aead, r.plain, h, stored)
	r.plain = buf
	if err != nil {
		return nil, err
	}
	raw, buf, err := decompress(r.raw, h.codec, plain, r.limit)
	r.raw = buf
	return raw, err
}

// checkKeys reads the header of every segment in dir and every dead letter
// in dir/dlq and returns ErrKey, naming the first file, if one is
// encrypted under a key id k has no key for. Damaged headers are left to
// recovery (which counts what they cost without any key). missing, if not
// nil, is given every key id lacking instead, and checkKeys returns nil.
func checkKeys(dir string, k *keyring, missing func(id string)) error {
	for _, sub := range []string{dir, filepath.Join(dir, deadDirName)} {
		if fi, err := os.Stat(sub); err != nil || !fi.IsDir() {
			continue // no dead letters (or a dlq that recovery moves aside)
		}
		files, err := listSegments(sub)
		if err != nil {
			return err
		}
		for _, sf := range files {
			h, ok, err := readSegmentHeader(filepath.Join(sub, sf.name))
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if _, err := k.forHeader(h); err != nil {
				if missing != nil {
					missing(keyIDString(h.keyID))
					continue
				}
				rel, _ := filepath.Rel(dir, filepath.Join(sub, sf.name))
				return fmt.Errorf("%w: %w: %s is encrypted under key id %s, and neither EncryptionKey nor DecryptionKeys has that id", ErrInvalidOptions, ErrKey, rel, keyIDString(h.keyID))
			}
		}
	}
	return nil
}

// readSegmentHeader reads and parses the header of the file at path; ok is
// false if it is missing or damaged.
func readSegmentHeader(path string) (segmentHeader, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return segmentHeader{}, false, nil
	}
	if err != nil {
		return segmentHeader{}, false, err
	}
	defer f.Close()
	var b [segmentHeaderSize]byte
	if n, _ := f.ReadAt(b[:], 0); n < segmentHeaderSize {
		return segmentHeader{}, false, nil
	}
	h, err := parseSegmentHeader(b[:])
	return h, err == nil, nil
}
