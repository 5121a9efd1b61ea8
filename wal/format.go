package wal

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// On-disk layout. All integers are little-endian except the magic, which is
// stored big-endian so a hex dump of a segment starts with the text "VINE".
//
// Segment header (segmentHeaderSize bytes):
//
//	[0:4]   magic 0x56494E45 ("VINE")
//	[4:6]   version: 4, records in the clear, framed under the segment's
//	        salt (see Salted framing below); 3, records encrypted (see
//	        Encryption below). Versions 1 and 2 (records in the clear,
//	        unsalted) are read, never written: a log written by this
//	        release is not readable by releases that predate version 4.
//	[6]     compression the segment was created with (informational; every
//	        record names its own codec)
//	[7]     flags (segmentRepaired: rewritten by recovery)
//	[8:16]  first record id
//	[16:24] size the file was created with (preallocated length)
//	[24:28] version 3: the key id (below); version 4: the salt (below,
//	        never zero); otherwise reserved, zero
//	[28:32] CRC32C of [0:28]
//
// Record (starts 8-byte aligned, total length padded to a multiple of 8):
//
//	[0:8]   id (never 0; written last, see writeRecord); in a version 4
//	        segment, the id XOR the salt's mask (below)
//	[8:16]  timestamp, Unix nanoseconds
//	[16:20] stored payload length
//	[20]    codec of the payload (codecNone, codecSnappy, codecLZ4)
//	[21]    kind (kindData, kindGap), or'ed with recordKeyed (0x80) for a
//	        keyed data record (below)
//	[22:24] item count (version 2): the record's number of items, 1 to
//	        maxStoredItems; 0 (every version 1 record) or itemsSaturated
//	        (65,535 items or more) mean unknown until Replay counts the
//	        frames. The group commit closes a group before it would pass
//	        maxStoredItems, so only a single Write or AppendItems call of
//	        more items than that makes a record whose count is unknown.
//	[24:24+n]       payload (n is the stored length: in a version 3
//	                segment, the sealed payload below)
//	[24+n:28+n]     CRC32C of [0:24+n], the id in [0:8] as it is, not
//	                masked; in a version 4 segment, of the 4 salt bytes
//	                followed by those bytes
//	[28+n:align8]   zero padding
//
// Keyed records. A data record whose items each carry a key (EnqueueKey's
// items: the key orders them and can park them) has recordKeyed set in its
// kind byte, and its payload (before compression and sealing, so both
// cover the keys) is
//
//	[0:m]        the items, framed with AppendFrame (n frames)
//	[m:m+8n]     the items' keys, 8 bytes little-endian each, in item order
//	[m+8n:+4]    n, uint32 little-endian
//
// The trailer keeps the items where they always are (a reader that wants
// only items takes payload[:m], no copy) and lets a writer append keys
// after the frames it has built (no copy either). The item count is n,
// the frames' number; a payload whose trailer does not match its frames is
// damage (ErrCorrupt where it is read). Records of other kinds are never
// keyed, nor is a dead letter's record (its keys are in its metadata). The
// flag is how the format is versioned here: a record without it is read as
// before (items with no key), so every older segment reads unchanged; only
// keyed records carry it, so a log whose queue never calls EnqueueKey
// stays readable by releases that predate keyed records, which see a keyed
// record as one of unknown kind (damage: counted, and its segment copied
// aside as .corrupt before the repair, so its bytes are not deleted).
//
// Salted framing (version 4 segments). Item bytes are user data, and in
// a segment in the clear an item stored as it is (one that does not
// compress) can hold bytes laid out as a record. After damage, the scan
// looks for the next record at every 8-byte offset, inside the damaged
// record's payload too, and would take such a forgery for a record
// (items nobody enqueued delivered, the damage hidden). So every segment
// written in the clear draws a random 32-bit salt (crypto/rand) into its
// header, and its records are framed under it:
//
//   - the stored id word is the id XOR the salt's mask, a 64-bit value
//     derived from the salt with its top bit set (so the word is never
//     zero for an id below 2^63, and a zero word still means an unwritten
//     slot); a reader unmasks it before anything else;
//   - the CRC32C starts with the salt's 4 bytes.
//
// A producer who never sees the segment's bytes does not know the salt: a
// record forged inside an item verifies only if it guesses the salt (or,
// the same, the checksum), a chance of 2^-32 for each forged record (an
// item can hold many, at most one per 8 bytes). The unmasked id is a check
// of the header that costs no checksum: a forged id word unmasks to an
// id far from the ids a segment can hold at that offset (see idBound in
// scan.go), so the look-ahead steps over a forgery after reading 8 bytes,
// not its claimed payload, and stays linear in the segment's size. (A
// repaired segment's ids are not bounded by their offsets, since its gap
// records stand for many ids; there a forgery still fails its checksum,
// but costs one.) Segments of versions 1 and 2 keep reading as before and
// stay forgeable until their records are acknowledged and the segments
// deleted; a repair rewrites a segment's intact records under a new salt.
// Encrypted segments (version 3) are not salted: a payload is ciphertext
// the producer does not choose, and the GCM tag binds a record to its id.
//
// Encryption (version 3 segments). Every record's payload is sealed with
// AES-256-GCM after compression (compressed ciphertext would not shrink):
//
//	[0:12]     nonce, fresh from crypto/rand for every record
//	[12:n-16]  ciphertext of the compressed payload (the codec field names
//	           the compression of the plaintext)
//	[n-16:n]   GCM tag
//
// The additional authenticated data is the record header, [0:24] with the
// record's id in [0:8]: the tag covers the id, time, length, codec, kind
// and item count, so a record cannot be moved to another id or have its
// header altered without failing to open. The CRC32C still covers the
// stored bytes, ciphertext included, so damage is found, located and
// counted by every scan without the key; the tag is checked only where a
// payload is read (Replay, ReadRange, dead letters, the tools' dumps).
// The key id is the first 4 bytes, little-endian, of SHA-256 over
// "vinequeue/wal key id" and the 32-byte key: it tells a reader which of
// its keys opens a segment, and Open refuses (ErrKey) a directory holding
// a segment or dead letter whose key id none of its keys has, before it
// reads or changes anything. A dead-letter file is a segment too (header
// and one record) and is encrypted the same way. The ack logs (ACK,
// dlq/ACK) hold record ids and item ranges only, never item bytes, and
// are not encrypted; nor are LOCK (empty) and spare.tmp (zeros).
//
// A record slot whose id is zero ends the log: segments are preallocated
// with zeros, and the id is the last field a writer stores, so a process
// killed in the middle of a record leaves a zero id behind. Everything else —
// a non-zero id with a bad CRC, an impossible length, an id out of sequence,
// or a valid record found after a zero id — is damage. Records need no
// other framing to be found again after damage: a reader tries every
// 8-byte aligned offset for a header whose id is plausible there, whose
// length fits and whose CRC32C checks (scan.go, resync).
const (
	segmentMagic = 0x56494E45
	// segmentVersion: records in the clear, framed under the salt.
	segmentVersion = 4
	// segmentVersionUnsalted is the version 4 layout without the salt
	// (the id stored as it is, the CRC unkeyed). It is read, never
	// written.
	segmentVersionUnsalted = 2
	// segmentVersionSealed is segmentVersion with every record's payload
	// encrypted and the key id at [24:28].
	segmentVersionSealed = 3
	// segmentVersionNoCounts is the first format: records' bytes [22:24]
	// are zero (item count unknown). It is read, never written.
	segmentVersionNoCounts = 1
	segmentHeaderSize      = 32
	recordHeaderSize       = 24
	recordTrailerSize      = 4
	recordOverhead         = recordHeaderSize + recordTrailerSize

	segmentRepaired = 1 << 0

	kindData = 0
	// kindGap marks ids lost to damage that recovery has already counted:
	// the record's id is the last lost id, the first is its predecessor's
	// plus one; its payload is empty (never sealed). A repair writes one in
	// place of each run of damaged records between intact ones, to keep
	// ids contiguous, so the loss is not counted again on the next Open.
	kindGap = 1
	// recordKeyed is the kind byte's flag for a keyed data record: its
	// payload ends with the items' keys (see Keyed records above).
	recordKeyed = 0x80
	// keyedTrailer is the fixed part of a keyed payload's trailer (n).
	keyedTrailer = 4

	// maxStoredItems is the largest item count a record header states;
	// itemsSaturated stands for any count above it (unknown, like 0).
	maxStoredItems = 0xFFFE
	itemsSaturated = 0xFFFF
)

// On-disk codec numbers (the segment header and each record use them).
const (
	codecNone   = 0
	codecSnappy = 1
	codecLZ4    = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// align8 rounds n up to a multiple of 8.
func align8(n int64) int64 { return (n + 7) &^ 7 }

// recordSize is the aligned on-disk size of a record with an n-byte payload.
func recordSize(n int) int64 { return align8(int64(recordOverhead + n)) }

type segmentHeader struct {
	codec   uint8
	flags   uint8
	firstID uint64
	size    uint64
	sealed  bool   // version 3: records encrypted under keyID
	keyID   uint32 // version 3 only
	// salt keys the records' framing (version 4); 0: unsalted (versions
	// 1 to 3). A header written in the clear must have one (newSalt).
	salt uint32
}

// framing returns how the records of a segment with this header are framed.
func (h segmentHeader) framing() recordFraming { return framingOf(h.salt) }

// recordFraming is the keying of a segment's records (Salted framing
// above). The zero value is the unsalted framing of versions 1 to 3.
type recordFraming struct {
	mask uint64 // 0: unsalted
	seed uint32 // CRC32C of the salt's 4 bytes: the checksum's start
}

func framingOf(salt uint32) recordFraming {
	if salt == 0 {
		return recordFraming{}
	}
	var f recordFraming
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], salt)
	f.seed = crc32.Checksum(b[:], castagnoli)
	// splitmix64's finalizer: every salt bit moves about half the mask's.
	z := uint64(salt) + 0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	f.mask = (z ^ (z >> 31)) | 1<<63
	return f
}

// id returns the id a stored id word (not zero) stands for.
func (f recordFraming) id(word uint64) uint64 { return word ^ f.mask }

// crc returns the record checksum of id and rest (the record from [8:]).
func (f recordFraming) crc(id uint64, rest []byte) uint32 {
	var idb [8]byte
	binary.LittleEndian.PutUint64(idb[:], id)
	return crc32.Update(crc32.Update(f.seed, castagnoli, idb[:]), castagnoli, rest)
}

// newSalt draws a segment's salt: random, never zero.
func newSalt() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
		if s := binary.LittleEndian.Uint32(b[:]); s != 0 {
			return s
		}
	}
}

func putSegmentHeader(b []byte, h segmentHeader) {
	_ = b[segmentHeaderSize-1]
	binary.BigEndian.PutUint32(b[0:4], segmentMagic)
	version, word := uint16(segmentVersion), h.salt
	switch {
	case h.sealed:
		version, word = segmentVersionSealed, h.keyID
	case h.salt == 0:
		version = segmentVersionUnsalted // only tests write one: old corpora
	}
	binary.LittleEndian.PutUint16(b[4:6], version)
	b[6] = h.codec
	b[7] = h.flags
	binary.LittleEndian.PutUint64(b[8:16], h.firstID)
	binary.LittleEndian.PutUint64(b[16:24], h.size)
	binary.LittleEndian.PutUint32(b[24:28], word)
	binary.LittleEndian.PutUint32(b[28:32], crc32.Checksum(b[0:28], castagnoli))
}

func parseSegmentHeader(b []byte) (segmentHeader, error) {
	if len(b) < segmentHeaderSize {
		return segmentHeader{}, fmt.Errorf("segment header truncated (%d bytes)", len(b))
	}
	if binary.BigEndian.Uint32(b[0:4]) != segmentMagic {
		return segmentHeader{}, fmt.Errorf("bad magic %#08x", binary.BigEndian.Uint32(b[0:4]))
	}
	if got, want := binary.LittleEndian.Uint32(b[28:32]), crc32.Checksum(b[0:28], castagnoli); got != want {
		return segmentHeader{}, fmt.Errorf("segment header checksum %#08x, want %#08x", got, want)
	}
	v := binary.LittleEndian.Uint16(b[4:6])
	if v != segmentVersion && v != segmentVersionUnsalted && v != segmentVersionNoCounts && v != segmentVersionSealed {
		return segmentHeader{}, fmt.Errorf("unsupported segment version %d", v)
	}
	h := segmentHeader{
		codec:   b[6],
		flags:   b[7],
		firstID: binary.LittleEndian.Uint64(b[8:16]),
		size:    binary.LittleEndian.Uint64(b[16:24]),
	}
	switch v {
	case segmentVersionSealed:
		h.sealed, h.keyID = true, binary.LittleEndian.Uint32(b[24:28])
	case segmentVersion:
		if h.salt = binary.LittleEndian.Uint32(b[24:28]); h.salt == 0 {
			return segmentHeader{}, fmt.Errorf("version %d segment without a salt", v)
		}
	}
	if h.firstID == 0 {
		return segmentHeader{}, fmt.Errorf("segment first id is 0")
	}
	return h, nil
}

// recordHeader is the decoded fixed part of a record.
type recordHeader struct {
	id     uint64
	time   int64
	length uint32
	codec  uint8
	kind   uint8
	keyed  bool // kindData with recordKeyed: the payload ends with keys
	items  int  // item count; 0: unknown (see the record layout)
	// raw is bytes [8:24] as read (decodeRecord): with the id, the
	// additional data a sealed payload was authenticated with.
	raw [16]byte
}

// aad returns the additional authenticated data of a sealed record: its
// header, [0:24], with its id (which a reader may have had to restore).
func (h *recordHeader) aad() [recordHeaderSize]byte {
	var a [recordHeaderSize]byte
	binary.LittleEndian.PutUint64(a[0:8], h.id)
	copy(a[8:], h.raw[:])
	return a
}

// storedItems is the header field for an item count.
func storedItems(n int) uint16 {
	if n > maxStoredItems {
		return itemsSaturated
	}
	return uint16(max(n, 0))
}

// countFromHeader is the item count a header field states (0: unknown).
func countFromHeader(v uint16) int {
	if v == itemsSaturated {
		return 0
	}
	return int(v)
}

// encodeRecord writes a complete record for payload into b, which must be
// at least recordSize(len(payload)) bytes of zeros. The id is stored last so
// that a writer killed before it finishes leaves a zero id, i.e. end of log.
// fr is the segment's framing (the zero value: unsalted).
func encodeRecord(b []byte, h recordHeader, payload []byte, fr recordFraming) {
	encodeSealedRecord(b, h, payload, nil, fr)
}

// encodeSealedRecord is encodeRecord for a segment whose records aead
// seals (nil: none): the payload is encrypted straight into b, which must
// then be at least recordSize(len(payload)+aead.Overhead()) bytes, so
// sealing costs no copy beyond the one encodeRecord makes.
func encodeSealedRecord(b []byte, h recordHeader, payload []byte, aead cipher.AEAD, fr recordFraming) {
	n := len(payload)
	if aead != nil {
		n += aead.Overhead()
	}
	binary.LittleEndian.PutUint64(b[8:16], uint64(h.time))
	binary.LittleEndian.PutUint32(b[16:20], uint32(n))
	b[20] = h.codec
	b[21] = h.kind
	if h.keyed {
		b[21] |= recordKeyed
	}
	binary.LittleEndian.PutUint16(b[22:24], storedItems(h.items))
	if aead != nil {
		copy(h.raw[:], b[8:recordHeaderSize])
		ad := h.aad()
		aead.Seal(b[recordHeaderSize:recordHeaderSize:recordHeaderSize+n], nil, payload, ad[:])
	} else {
		copy(b[recordHeaderSize:], payload)
	}
	binary.LittleEndian.PutUint32(b[recordHeaderSize+n:], fr.crc(h.id, b[8:recordHeaderSize+n]))
	// Publish: one 8-byte aligned store.
	binary.LittleEndian.PutUint64(b[0:8], h.id^fr.mask)
}

// reframe rewrites, in place, the id word and checksum of the record at
// the start of b (intact under from, its id id) for the framing to: the
// bytes between them are the same under every framing.
func reframe(b []byte, id uint64, length uint32, to recordFraming) {
	end := recordHeaderSize + int(length)
	binary.LittleEndian.PutUint32(b[end:], to.crc(id, b[8:end]))
	binary.LittleEndian.PutUint64(b[0:8], id^to.mask)
}

// decodeRecord parses the record at the start of b. maxLen bounds the stored
// length: a length field claiming more than b or maxLen holds is damage, so
// a corrupt length can never make a reader allocate or read out of bounds.
// It returns the header, the stored payload (aliasing b) and the aligned
// record size. A zero id is reported as errEndOfLog, with one exception:
// when want (the id the slot should hold; 0 if unknown) makes the checksum
// match, the record is complete and only its id was lost — a bit flip, or a
// writer killed between its last two stores — and it is returned as want.
// fr is the segment's framing.
func decodeRecord(b []byte, maxLen int, want uint64, fr recordFraming) (recordHeader, []byte, int64, error) {
	return decodeRecordCRC(b, maxLen, want, true, fr)
}

// decodeRecordCRC is decodeRecord, with the checksum verification optional
// for records verified before (Replay of the segments Open scanned: they
// are immutable and locked, and one CRC pass is a third of recovery time).
func decodeRecordCRC(b []byte, maxLen int, want uint64, verify bool, fr recordFraming) (recordHeader, []byte, int64, error) {
	if len(b) < recordHeaderSize {
		if allZero(b) {
			return recordHeader{}, nil, 0, errEndOfLog
		}
		return recordHeader{}, nil, 0, fmt.Errorf("record header truncated (%d bytes left)", len(b))
	}
	h := recordHeader{
		id:     binary.LittleEndian.Uint64(b[0:8]),
		time:   int64(binary.LittleEndian.Uint64(b[8:16])),
		length: binary.LittleEndian.Uint32(b[16:20]),
		codec:  b[20],
		kind:   b[21] &^ recordKeyed,
		keyed:  b[21]&recordKeyed != 0,
		items:  countFromHeader(binary.LittleEndian.Uint16(b[22:24])),
	}
	copy(h.raw[:], b[8:recordHeaderSize])
	zeroID := h.id == 0
	if zeroID {
		if want == 0 || allZero(b[8:recordHeaderSize]) {
			return h, nil, 0, errEndOfLog
		}
		h.id = want
	} else {
		h.id = fr.id(h.id)
	}
	if int64(h.length) > int64(maxLen) {
		if zeroID {
			return h, nil, 0, errEndOfLog
		}
		return h, nil, 0, fmt.Errorf("record %d: length %d over the limit %d", h.id, h.length, maxLen)
	}
	end := int64(recordHeaderSize) + int64(h.length)
	if end+recordTrailerSize > int64(len(b)) {
		if zeroID {
			return h, nil, 0, errEndOfLog
		}
		return h, nil, 0, fmt.Errorf("record %d: length %d runs past the end of the segment (%d bytes left)", h.id, h.length, len(b))
	}
	sum := binary.LittleEndian.Uint32(b[end : end+recordTrailerSize])
	if !verify && !zeroID {
		return finishRecord(b, h, end)
	}
	if got := fr.crc(h.id, b[8:end]); got != sum {
		if zeroID {
			return h, nil, 0, errEndOfLog
		}
		return h, nil, 0, fmt.Errorf("record %d: checksum %#08x, want %#08x", h.id, got, sum)
	}
	return finishRecord(b, h, end)
}

func finishRecord(b []byte, h recordHeader, end int64) (recordHeader, []byte, int64, error) {
	if h.codec > codecLZ4 || h.kind > kindGap || (h.keyed && h.kind != kindData) {
		return h, nil, 0, fmt.Errorf("record %d: unknown codec %d or kind %#02x", h.id, h.codec, b[21])
	}
	size := align8(end + recordTrailerSize)
	if size > int64(len(b)) {
		// Only padding is missing: the record itself is intact, but the
		// next one cannot start here; the caller sees the segment end.
		size = int64(len(b))
	}
	return h, b[recordHeaderSize:end], size, nil
}

// errEndOfLog is decodeRecord's report of a zero id.
var errEndOfLog = fmt.Errorf("end of log")

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
