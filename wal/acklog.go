package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// The acknowledgement log (file ACK) records which record ids are done with
// (delivered or given up on) and how far the log was durably written. It is
// append-only between compactions; see doc.go for the format and its
// torn-write story.
//
// Header (ackHeaderSize bytes):
//
//	[0:4]   magic 0x5641434C ("VACL", big-endian like the segment magic)
//	[4:6]   version (2: item entries may occur; version 1 files are read)
//	[6:8]   reserved, zero
//	[8:16]  generation: how many times the file was rewritten
//	[16:28] reserved, zero
//	[28:32] CRC32C of [0:28]
//
// Entry (ackEntrySize bytes, appended by each flush, one write(2) per flush):
//
//	[0:8]   lo
//	[8:16]  hi
//	[16]    kind: ackKindAcked (ids lo..hi are acknowledged) or
//	        ackKindWritten (lo 0: every id <= hi was durably written)
//	[17:20] reserved, zero
//	[20:24] CRC32C of [0:20]
//
// or, for kind ackKindItems (items [off, off+n) of record id are done with,
// the record itself not yet acknowledged; n >= 1, off+n < 2^32):
//
//	[0:8]   id (>= 1)
//	[8:12]  off
//	[12:16] n
//	[16]    kind ackKindItems
//	[17:20] reserved, zero
//	[20:24] CRC32C of [0:20]
const (
	ackFileName    = "ACK"
	ackLogMagic    = 0x5641434C
	ackLogVersion  = 2
	ackHeaderSize  = 32
	ackEntrySize   = 24
	ackKindAcked   = 1
	ackKindWritten = 2
	ackKindItems   = 3

	// ackLogVersion1 files have no item entries; they are read as they are.
	ackLogVersion1 = 1

	// The two-slot format of earlier versions: a low-water mark only.
	legacyAckMagic    = 0x5641434B
	legacyAckSlotSize = 512
	legacyAckSlotLen  = 24

	// ackCompactMin is the size under which the ack log is never rewritten.
	ackCompactMin = 64 << 10
)

// ackState is what an ack log says.
type ackState struct {
	acked   spanSet
	items   partialAcks // item entries, of records acknowledged or not
	written uint64      // every id <= written was durably written
	gen     uint64
	legacy  bool // read from the two-slot format: acked is 1..mark
	// Entries that fail their checksum. Only a torn last write can leave
	// bad entries at the end (badTail); a bad entry with a good one after
	// it (badMid) is damage, and acks it held may be missing.
	badMid, badTail int
	tornBytes       int // a partial entry at the end
}

// errAckHeader is parseAckLog's report of a file that is not an ack log.
var errAckHeader = errors.New("not an acknowledgement log")

func putAckHeader(b []byte, gen uint64) {
	clear(b[:ackHeaderSize])
	binary.BigEndian.PutUint32(b[0:4], ackLogMagic)
	binary.LittleEndian.PutUint16(b[4:6], ackLogVersion)
	binary.LittleEndian.PutUint64(b[8:16], gen)
	binary.LittleEndian.PutUint32(b[28:32], crc32.Checksum(b[0:28], castagnoli))
}

// appendItemsEntry appends "items [off, off+n) of record id are done".
func appendItemsEntry(dst []byte, id uint64, off, n uint32) []byte {
	return appendAckEntry(dst, ackKindItems, id, uint64(off)|uint64(n)<<32)
}

func appendAckEntry(dst []byte, kind uint8, lo, hi uint64) []byte {
	var e [ackEntrySize]byte
	binary.LittleEndian.PutUint64(e[0:8], lo)
	binary.LittleEndian.PutUint64(e[8:16], hi)
	e[16] = kind
	binary.LittleEndian.PutUint32(e[20:24], crc32.Checksum(e[0:20], castagnoli))
	return append(dst, e[:]...)
}

// parseAckEntry decodes one entry; ok is false if it does not verify.
func parseAckEntry(e []byte) (kind uint8, lo, hi uint64, ok bool) {
	if binary.LittleEndian.Uint32(e[20:24]) != crc32.Checksum(e[0:20], castagnoli) ||
		e[17] != 0 || e[18] != 0 || e[19] != 0 {
		return 0, 0, 0, false
	}
	kind, lo, hi = e[16], binary.LittleEndian.Uint64(e[0:8]), binary.LittleEndian.Uint64(e[8:16])
	switch {
	case kind == ackKindAcked && lo >= 1 && lo <= hi:
	case kind == ackKindWritten && lo == 0:
	case kind == ackKindItems && lo >= 1 && hi>>32 >= 1 && uint64(uint32(hi))+hi>>32 <= 1<<32-1:
	default:
		return 0, 0, 0, false
	}
	return kind, lo, hi, true
}

// parseAckLog reads an ack log (or a legacy two-slot file). It fails only
// when the header is unusable; damaged entries are skipped and counted.
// It never panics and allocates in proportion to the valid entries only.
func parseAckLog(b []byte) (ackState, error) {
	var st ackState
	if len(b) >= 4 && binary.BigEndian.Uint32(b[0:4]) == legacyAckMagic {
		return parseLegacyAck(b)
	}
	if len(b) < ackHeaderSize {
		return st, fmt.Errorf("%w: %d bytes", errAckHeader, len(b))
	}
	if binary.BigEndian.Uint32(b[0:4]) != ackLogMagic {
		return st, fmt.Errorf("%w: magic %#08x", errAckHeader, binary.BigEndian.Uint32(b[0:4]))
	}
	if got, want := binary.LittleEndian.Uint32(b[28:32]), crc32.Checksum(b[0:28], castagnoli); got != want {
		return st, fmt.Errorf("%w: header checksum %#08x, want %#08x", errAckHeader, got, want)
	}
	if v := binary.LittleEndian.Uint16(b[4:6]); v != ackLogVersion && v != ackLogVersion1 {
		return st, fmt.Errorf("%w: version %d", errAckHeader, v)
	}
	st.gen = binary.LittleEndian.Uint64(b[8:16])
	bad := 0
	off := ackHeaderSize
	for ; off+ackEntrySize <= len(b); off += ackEntrySize {
		kind, lo, hi, ok := parseAckEntry(b[off : off+ackEntrySize])
		if !ok {
			bad++
			continue
		}
		st.badMid += bad // a good entry after bad ones: they were not a torn tail
		bad = 0
		switch kind {
		case ackKindAcked:
			st.acked.add(lo, hi)
		case ackKindItems:
			st.items.add(lo, int(uint32(hi)), int(hi>>32))
		default:
			st.written = max(st.written, hi)
		}
	}
	st.badTail = bad
	st.tornBytes = len(b) - off
	return st, nil
}

func parseLegacyAck(b []byte) (ackState, error) {
	var st ackState
	var seq uint64
	valid := false
	for i := 0; i < 2; i++ {
		off := i * legacyAckSlotSize
		if off+legacyAckSlotLen > len(b) {
			break
		}
		s := b[off : off+legacyAckSlotLen]
		if binary.BigEndian.Uint32(s[0:4]) != legacyAckMagic ||
			binary.LittleEndian.Uint32(s[20:24]) != crc32.Checksum(s[0:20], castagnoli) {
			continue
		}
		if sq := binary.LittleEndian.Uint64(s[4:12]); !valid || sq > seq {
			seq, valid = sq, true
			st.acked = spanSet{}
			st.acked.add(1, binary.LittleEndian.Uint64(s[12:20]))
		}
	}
	if !valid {
		return st, fmt.Errorf("%w: legacy ack file with no valid slot", errAckHeader)
	}
	st.legacy = true
	return st, nil
}

// damaged reports whether entries were lost other than to a torn last write.
func (st *ackState) damaged() bool { return st.badMid > 0 }

// ackLog is the open ack log of a Log.
type ackLog struct {
	dir  string
	f    *os.File // opened O_APPEND
	size int64
	gen  uint64
	// torn: a failed write may have left part of an entry at the end,
	// which would misalign every later entry; the next flush rewrites the
	// file instead of appending.
	torn bool
}

// rewriteAckLog replaces dir's ack log with one holding acked, the item
// entries of items and written, crash-safely: it is written and synced
// under a temporary name, renamed over the old one, and the directory
// synced. Until the rename the old file stands; after it, the new one.
func rewriteAckLog(dir string, gen uint64, acked []span, items []itemsDone, written uint64) (*ackLog, error) {
	buf := make([]byte, ackHeaderSize, ackHeaderSize+(len(acked)+len(items)+1)*ackEntrySize)
	putAckHeader(buf, gen)
	for _, sp := range acked {
		buf = appendAckEntry(buf, ackKindAcked, sp.lo, sp.hi)
	}
	for _, d := range items {
		buf = appendItemsEntry(buf, d.id, d.off, d.n)
	}
	buf = appendAckEntry(buf, ackKindWritten, 0, written)
	path := filepath.Join(dir, ackFileName)
	if _, err := installFile(path, buf); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	return &ackLog{dir: dir, f: f, size: int64(len(buf)), gen: gen}, nil
}

// write appends entries (whole entries, one write), not synced.
func (a *ackLog) write(entries []byte) error {
	n, err := a.f.Write(entries)
	a.size += int64(n)
	if err != nil {
		a.torn = true
		return fmt.Errorf("append to %s: %w", ackFileName, err)
	}
	return nil
}

// append writes entries (whole entries, one write) and makes them durable,
// with every entry written before them.
func (a *ackLog) append(entries []byte) error {
	if err := a.write(entries); err != nil {
		return err
	}
	if err := fdatasync(a.f); err != nil {
		return fmt.Errorf("fdatasync %s: %w", ackFileName, err)
	}
	return nil
}

// rewrite compacts the log to the state given.
func (a *ackLog) rewrite(acked []span, items []itemsDone, written uint64) error {
	n, err := rewriteAckLog(a.dir, a.gen+1, acked, items, written)
	if err != nil {
		return err
	}
	a.f.Close()
	*a = *n
	return nil
}

func (a *ackLog) close() {
	if a != nil && a.f != nil {
		a.f.Close()
		a.f = nil
	}
}
