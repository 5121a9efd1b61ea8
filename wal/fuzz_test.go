package wal

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// Fuzz targets for every reader of on-disk bytes. Seeds live in
// testdata/fuzz/<Target>/ (regenerate with VINEWAL_WRITE_CORPUS=1 go test
// -run TestWriteFuzzCorpus ./wal/). CI runs each briefly, e.g.
//
//	go test -run='^$' -fuzz='^FuzzRecord$' -fuzztime=10s ./wal/
//	go test -run='^$' -fuzz='^FuzzSegment$' -fuzztime=10s ./wal/
//	go test -run='^$' -fuzz='^FuzzOpen$' -fuzztime=10s ./wal/

const fuzzLimit = 1 << 20

// fuzzKey seals the encrypted seeds; the targets read with it, so sealed
// inputs reach the decryption (and mutated ones its refusals).
var fuzzKey = testKey(0xf0)

// fuzzKeys is the keyring the targets read with.
func fuzzKeys() *keyring {
	k, err := newKeyring(fuzzKey, nil)
	if err != nil {
		panic(err)
	}
	return k
}

// sealedSegment returns a small segment whose records are sealed under
// fuzzKey: a seed for the segment and Open targets.
func sealedSegment(tb testing.TB) []byte {
	dir := tb.TempDir()
	l, err := Open(dir, Options{SegmentSize: 4096, NoSync: true, EncryptionKey: fuzzKey})
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		var p []byte
		for j := 0; j < 3; j++ {
			p = AppendFrame(p, payloadFor(i*3+j))
		}
		if _, err := l.Append(p); err != nil {
			tb.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if err != nil {
		tb.Fatal(err)
	}
	return trimZeroTail(b)
}

// keyedSegment returns a small segment of keyed records (AppendKeys
// trailers) between unkeyed ones, sealed under fuzzKey if sealed: a seed
// for the segment and Open targets.
func keyedSegment(tb testing.TB, sealed bool) []byte {
	dir := tb.TempDir()
	opts := Options{SegmentSize: 4096, NoSync: true}
	if sealed {
		opts.EncryptionKey = fuzzKey
	}
	l, err := Open(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		var p []byte
		var keys []uint64
		for j := 0; j < 3; j++ {
			p = AppendFrame(p, payloadFor(i*3+j))
			keys = append(keys, uint64(i*3+j)<<40|7)
		}
		if i%2 == 0 {
			_, err = l.WriteKeyed(AppendKeys(p, keys))
		} else {
			_, err = l.Write(p)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if err != nil {
		tb.Fatal(err)
	}
	return trimZeroTail(b)
}

// trimZeroTail keeps a seed small: the used part of a segment and a little
// of its zero tail.
func trimZeroTail(b []byte) []byte {
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	return b[:min(len(b), int(align8(int64(end)))+64)]
}

// FuzzRecord decodes arbitrary bytes as a record (and its payload as
// sealed or compressed data and item frames), and checks that any payload
// survives compress, seal (when c&4 is set), encode, decode, unseal and
// decompress unchanged.
func FuzzRecord(f *testing.F) {
	keys := fuzzKeys()
	f.Add([]byte{}, uint64(0), uint8(0))
	f.Add(bytes.Repeat([]byte("event "), 40), uint64(7), uint8(1))
	f.Add(bytes.Repeat([]byte("event "), 40), uint64(7), uint8(5))
	f.Add([]byte("tiny"), uint64(3), uint8(6))
	f.Add([]byte("salted"), uint64(5)<<32|3, uint8(16))
	{
		// A salted record (c&16: decoded under the salt want>>32).
		p := AppendFrame(nil, payloadFor(5))
		rec := make([]byte, recordSize(len(p)))
		encodeRecord(rec, recordHeader{id: 9, time: 1, items: 1}, p, framingOf(7))
		f.Add(rec, uint64(7)<<32|9, uint8(16))
	}
	for i, p := range [][]byte{payloadFor(1), bytes.Repeat(payloadFor(2), 5)} {
		// Sealed records, as decodeRecord sees them on disk.
		z := &compressor{c: Compression(i)}
		stored, codec := z.compress(p)
		rec := make([]byte, recordSize(len(stored)+sealOverhead))
		encodeSealedRecord(rec, recordHeader{id: 9, time: 1, codec: codec}, stored, keys.seal, recordFraming{})
		f.Add(rec, uint64(9), uint8(4+i))
	}
	{
		// A keyed record, sealed.
		p := AppendKeys(AppendFrame(AppendFrame(nil, payloadFor(3)), payloadFor(4)), []uint64{3, 1 << 63})
		z := &compressor{c: Snappy}
		stored, codec := z.compress(p)
		rec := make([]byte, recordSize(len(stored)+sealOverhead))
		encodeSealedRecord(rec, recordHeader{id: 9, time: 1, codec: codec, keyed: true, items: 2}, stored, keys.seal, recordFraming{})
		f.Add(rec, uint64(9), uint8(12))
	}
	f.Fuzz(func(t *testing.T, data []byte, want uint64, c uint8) {
		rr := recordReader{limit: fuzzLimit}
		var fr recordFraming
		if c&16 != 0 {
			fr = framingOf(uint32(want >> 32))
		}
		// Arbitrary bytes: never a panic, never a size past the input.
		if h, stored, size, err := decodeRecord(data, fuzzLimit, want, fr); err == nil {
			if size > int64(len(data)) || int64(len(stored)) > size || h.id == 0 {
				t.Fatalf("decodeRecord: size %d, stored %d, input %d, id %d", size, len(stored), len(data), h.id)
			}
			if raw, _, err := decompress(nil, h.codec, stored, fuzzLimit); err == nil {
				_ = ForEachItem(raw, func([]byte) error { return nil })
			}
			if raw, err := rr.payload(keys.seal, &h, stored); err == nil {
				_ = ForEachItem(raw, func([]byte) error { return nil })
				if h.keyed {
					fuzzSplitKeyed(t, raw)
				}
			}
		}
		_, _, _ = decompress(nil, c%4, data, fuzzLimit)
		_ = ForEachItem(data, func([]byte) error { return nil })
		fuzzSplitKeyed(t, data)

		// Round trip of data as a payload.
		z := &compressor{c: Compression(c % 3)}
		stored, codec := z.compress(data)
		var aead cipher.AEAD
		n := len(stored)
		if c&4 != 0 {
			aead, n = keys.seal, n+sealOverhead
		}
		buf := make([]byte, recordSize(n))
		id := (want | 1) &^ (1 << 63) // ids stay below 2^63 (format.go)
		keyed := c&8 != 0
		encodeSealedRecord(buf, recordHeader{id: id, time: 1, codec: codec, keyed: keyed, items: int(want % 70000)}, stored, aead, fr)
		h, got, size, err := decodeRecord(buf, fuzzLimit, 0, fr)
		if err != nil || h.id != id || size != int64(len(buf)) || h.keyed != keyed || h.kind != kindData {
			t.Fatalf("round trip: id %d size %d keyed %v kind %d err %v", h.id, size, h.keyed, h.kind, err)
		}
		raw, err := rr.payload(aead, &h, got)
		if err != nil || !bytes.Equal(raw, data) {
			t.Fatalf("round trip through %s (sealed %v): err %v, equal %v", codecName(codec), aead != nil, err, bytes.Equal(raw, data))
		}
		if aead != nil {
			// The tag covers the header: an id read back wrong (say, restored
			// from the slot's position) is refused, never accepted.
			h.id++
			if _, err := rr.payload(aead, &h, got); err == nil {
				t.Fatalf("a sealed record opened under another id")
			}
		}
	})
}

// fuzzSplitKeyed splits arbitrary bytes as a keyed payload: no panic, and
// what it accepts holds together (n frames and n keys, the frames first).
func fuzzSplitKeyed(t *testing.T, data []byte) {
	items, keys, n, err := splitKeyed(data)
	if err != nil {
		return
	}
	frames := 0
	if ferr := ForEachItem(items, func([]byte) error { frames++; return nil }); ferr != nil || frames != n || len(keys) != 8*n ||
		len(items)+len(keys)+keyedTrailer != len(data) || !bytes.Equal(AppendKeys(bytes.Clone(items), appendKeysOf(nil, keys)), data) {
		t.Fatalf("splitKeyed accepted %d bytes as %d items (%d frames, %v) and %d key bytes", len(data), n, frames, ferr, len(keys))
	}
}

// FuzzSegment scans arbitrary bytes as a segment file: no panic, and what
// the scan reports must hold together.
func FuzzSegment(f *testing.F) {
	f.Add([]byte{}, uint64(1))
	f.Add(sealedSegment(f), uint64(1))
	f.Add(keyedSegment(f, false), uint64(1))
	f.Add(keyedSegment(f, true), uint64(1))
	keys := fuzzKeys()
	f.Fuzz(func(t *testing.T, data []byte, nameID uint64) {
		var prev uint64
		var aead cipher.AEAD
		if h, err := parseSegmentHeader(data); err == nil {
			aead, _ = keys.forHeader(h) // nil for another key id: decompress the sealed bytes
		}
		rr := recordReader{limit: fuzzLimit}
		s, err := scanSegment(data, nameID, fuzzLimit, func(off int64, h recordHeader, stored []byte) error {
			if off < segmentHeaderSize || off%8 != 0 || off >= int64(len(data)) {
				t.Fatalf("record at offset %d of %d", off, len(data))
			}
			if prev != 0 && h.id <= prev {
				t.Fatalf("ids not increasing: %d after %d", h.id, prev)
			}
			prev = h.id
			if raw, err := rr.payload(aead, &h, stored); err == nil {
				_ = ForEachItem(raw, func([]byte) error { return nil })
				if h.keyed {
					fuzzSplitKeyed(t, raw)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if s.end > int64(len(data)) || s.lastID+1 < s.firstID || (s.records > 0 && s.lastID != prev) {
			t.Fatalf("inconsistent scan: %+v (input %d bytes)", s, len(data))
		}
		if s.damage == nil && s.headerOK && s.records == 0 && s.end != segmentHeaderSize {
			t.Fatalf("clean empty segment ends at %d", s.end)
		}
	})
}

// FuzzOpen recovers a directory holding an arbitrary segment file (before
// a valid one) and replays it: Open must not fail or panic, a second Open
// must find nothing more to count. It opens with fuzzKey, so sealed seeds
// replay; the one refusal allowed is ErrKey for an intact header naming
// another key id, before anything changed.
func FuzzOpen(f *testing.F) {
	f.Add([]byte{})
	f.Add(sealedSegment(f))
	f.Add(keyedSegment(f, false))
	f.Add(keyedSegment(f, true))
	f.Fuzz(func(t *testing.T, data []byte) {
		skipFsync = true
		defer func() { skipFsync = false }()
		dir := fastTempDir(t)
		if err := os.WriteFile(filepath.Join(dir, segmentName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		opts := Options{SegmentSize: 4096, NoSync: true, EncryptionKey: fuzzKey}
		for round := 0; round < 2; round++ {
			l, err := Open(dir, opts)
			if round == 0 && errors.Is(err, ErrKey) {
				h, herr := parseSegmentHeader(data)
				if herr != nil || !h.sealed || h.keyID == fuzzKeys().sealID {
					t.Fatalf("ErrKey for a segment that does not need another key: %v", err)
				}
				after, rerr := os.ReadFile(filepath.Join(dir, segmentName(1)))
				if rerr != nil || !bytes.Equal(after, data) {
					t.Fatalf("a refused Open changed the segment (%v)", rerr)
				}
				return
			}
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			var last uint64
			err = l.ReplayRecords(func(r *ReplayedRecord) error {
				if r.ID <= last {
					t.Fatalf("replay ids not increasing: %d after %d", r.ID, last)
				}
				last = r.ID
				if r.Keys != nil {
					n := 0
					if ForEachItem(r.Payload, func([]byte) error { n++; return nil }) != nil || n != len(r.Keys) {
						t.Fatalf("record %d replayed with %d keys for %d items", r.ID, len(r.Keys), n)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("round %d: replay: %v", round, err)
			}
			st := l.Stats()
			if round == 1 && st.Corrupt != 0 {
				t.Fatalf("second Open counted %d corrupt records again", st.Corrupt)
			}
			if _, err := l.Append([]byte("after")); err != nil {
				t.Fatalf("round %d: append after recovery: %v", round, err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestWriteFuzzCorpus regenerates the seed corpus from real segments.
// FuzzAckLog feeds arbitrary bytes to the ack log parser: it never
// panics, what it accepts is well-formed (sorted, disjoint spans of ids,
// and of item indexes within 32 bits per record), and writing that state
// back and parsing it again gives the same state.
func FuzzAckLog(f *testing.F) {
	for _, seed := range ackLogSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseAckLog(data)
		if err != nil {
			return
		}
		for i, sp := range st.acked.spans {
			if sp.lo == 0 || sp.lo > sp.hi || (i > 0 && st.acked.spans[i-1].hi+1 >= sp.lo) {
				t.Fatalf("malformed set: %v", st.acked.spans)
			}
		}
		for id, set := range st.items.m {
			for i, sp := range set.spans {
				if id == 0 || sp.lo > sp.hi || sp.hi > 1<<32-2 || (i > 0 && set.spans[i-1].hi+1 >= sp.lo) {
					t.Fatalf("malformed items of record %d: %v", id, set.spans)
				}
			}
		}
		dir := t.TempDir()
		a, err := rewriteAckLog(dir, st.gen+1, st.acked.spans, st.items.entries(), st.written)
		if err != nil {
			t.Fatal(err)
		}
		a.close()
		b, err := os.ReadFile(filepath.Join(dir, ackFileName))
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseAckLog(b)
		if err != nil || again.written != st.written || !slices.Equal(again.acked.spans, st.acked.spans) ||
			!slices.Equal(again.items.entries(), st.items.entries()) || again.damaged() || again.badTail != 0 {
			t.Fatalf("round trip: %v %+v, want %+v", err, again, st)
		}
	})
}

// ackLogSeeds are FuzzAckLog's seeds: a version 1 log, torn and flipped
// versions of it, a legacy two-slot file, and version 2 logs with item
// entries (well-formed, torn, flipped, and with impossible ranges).
func ackLogSeeds() map[string][]byte {
	b := make([]byte, ackHeaderSize)
	putAckHeader(b, 3)
	setAckVersion(b, ackLogVersion1)
	b = appendAckEntry(b, ackKindAcked, 1, 100)
	b = appendAckEntry(b, ackKindAcked, 140, 150)
	b = appendAckEntry(b, ackKindWritten, 0, 160)
	b = appendAckEntry(b, ackKindAcked, 101, 120)
	b = appendAckEntry(b, ackKindWritten, 0, 170)
	flipped := bytes.Clone(b)
	flipped[ackHeaderSize+ackEntrySize+9] ^= 4
	legacy := make([]byte, 2*legacyAckSlotSize)
	putLegacySlot(legacy, 9, 77)

	it := make([]byte, ackHeaderSize)
	putAckHeader(it, 4)
	it = appendAckEntry(it, ackKindAcked, 1, 10)
	it = appendItemsEntry(it, 11, 0, 3)
	it = appendItemsEntry(it, 12, 5, 2)
	it = appendItemsEntry(it, 11, 3, 4) // continues the first: one span
	it = appendItemsEntry(it, 12, 0, 1)
	it = appendAckEntry(it, ackKindWritten, 0, 12)
	it = appendItemsEntry(it, 13, 1<<32-2, 1) // the last item index there is
	it = appendAckEntry(it, ackKindAcked, 12, 12)
	itFlipped := bytes.Clone(it)
	itFlipped[ackHeaderSize+2*ackEntrySize+10] ^= 1 // the second item entry's off
	bad := make([]byte, ackHeaderSize)
	putAckHeader(bad, 5)
	bad = appendAckEntry(bad, ackKindItems, 7, 0)             // n = 0
	bad = appendAckEntry(bad, ackKindItems, 7, 1<<32-1|1<<32) // off+n past 32 bits
	bad = appendAckEntry(bad, ackKindItems, 0, 1<<32)         // id 0
	bad = appendItemsEntry(bad, 7, 2, 2)
	return map[string][]byte{
		"log":             b,
		"torn":            b[:len(b)-7],
		"flipped-mid":     flipped,
		"header-only":     b[:ackHeaderSize],
		"legacy":          legacy,
		"empty":           {},
		"items":           it,
		"items-torn":      it[:len(it)-ackEntrySize-5],
		"items-flipped":   itFlipped,
		"items-bad-range": bad,
	}
}

// setAckVersion rewrites an ack log header's version (and its checksum).
func setAckVersion(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b[4:6], v)
	binary.LittleEndian.PutUint32(b[28:32], crc32.Checksum(b[0:28], castagnoli))
}

func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("VINEWAL_WRITE_CORPUS") == "" {
		t.Skip("set VINEWAL_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	fx := buildCorruptionFixture(t)
	a, b := fx.files[fx.a], fx.files[fx.b]
	used := fx.recs[len(fx.recs)-1].next
	flipped := bytes.Clone(a)
	flipped[fx.recs[2].start+27] ^= 0x10
	zeroID := bytes.Clone(a)
	copy(zeroID[fx.recs[1].start:], make([]byte, 8))
	segs := map[string][]byte{
		"segment-a":         a[:used+64],
		"segment-b":         b,
		"truncated-header":  a[:17],
		"truncated-record":  a[:fx.recs[3].start+30],
		"flipped-payload":   flipped[:used+64],
		"zero-id-mid":       zeroID[:used+64],
		"lengthy-garbage":   append(bytes.Clone(a[:fx.recs[0].start+16]), 0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0),
		"gap-record-repair": repairedFixture(t, fx),
	}
	for _, c := range []Compression{LZ4, NoCompression} {
		segs["codec-"+c.String()] = smallSegment(t, c)
	}
	segs["sealed"] = sealedSegment(t)
	segs["keyed"] = keyedSegment(t, false)
	write := func(target, name string, vals ...any) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.WriteString("go test fuzz v1\n")
		for _, v := range vals {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&body, "[]byte(%s)\n", strconv.Quote(string(v)))
			case uint64:
				fmt.Fprintf(&body, "uint64(%d)\n", v)
			case uint8:
				fmt.Fprintf(&body, "byte(%s)\n", strconv.QuoteRune(rune(v)))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), body.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range segs {
		write("FuzzSegment", name, data, uint64(1))
		write("FuzzOpen", name, data)
	}
	for i, r := range fx.recs {
		rec := a[r.start:r.next]
		write("FuzzRecord", fmt.Sprintf("record-%d", i), rec, r.id, uint8(i))
	}
	write("FuzzRecord", "truncated-record", a[fx.recs[0].start:fx.recs[0].crcEnd-3], fx.recs[0].id, uint8(1))
	write("FuzzRecord", "json-payload", bytes.Repeat(payloadFor(3), 4), uint64(0), uint8(2))
	for name, data := range ackLogSeeds() {
		write("FuzzAckLog", name, data)
	}
}

// repairedFixture returns segment A as recovery rewrites it after a flip in
// its fourth record: intact prefix plus a gap record.
func repairedFixture(t *testing.T, fx *corruptionFixture) []byte {
	dir := fastTempDir(t)
	a := bytes.Clone(fx.files[fx.a])
	a[fx.recs[3].start+30] ^= 1
	fx.recoverWith(t, "seed", dir, a, true)
	b, err := os.ReadFile(filepath.Join(dir, fx.a))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func smallSegment(t *testing.T, c Compression) []byte {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 4096, NoSync: true, Compression: c})
	for i := 0; i < 4; i++ {
		var p []byte
		for j := 0; j < 3; j++ {
			p = AppendFrame(p, payloadFor(i*3+j))
		}
		if _, err := l.Append(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if err != nil {
		t.Fatal(err)
	}
	return trimZeroTail(b)
}
