package wal

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// forgedInside returns a payload of random-looking bytes that holds, at
// every 8-byte offset of its middle, the start of a record claiming id
// with a length that fits, each framed under fr (a producer's guess of the
// segment's framing), padded so one copy lands on each alignment.
func forgedInside(id uint64, fr recordFraming) []byte {
	inner := AppendFrame(nil, []byte("FORGED"))
	rec := make([]byte, recordSize(len(inner)))
	encodeRecord(rec, recordHeader{id: id, time: 1, items: 1}, inner, fr)
	var p []byte
	x := uint64(0x9E3779B97F4A7C15)
	for k := range 8 {
		for range 64 + k {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			p = append(p, byte(x))
		}
		p = append(p, rec...)
	}
	return p
}

// damagedSegment returns a segment under salt whose first record (id 1)
// holds payload and has a flipped timestamp bit (its checksum fails),
// followed by an intact record 2 when withNext is set.
func damagedSegment(salt uint32, payload []byte, withNext bool) []byte {
	hdr := segmentHeader{firstID: 1, salt: salt}
	size := segmentHeaderSize + recordSize(len(payload)) + recordSize(8) + 64
	seg := make([]byte, size)
	hdr.size = uint64(size)
	putSegmentHeader(seg, hdr)
	encodeRecord(seg[segmentHeaderSize:], recordHeader{id: 1, time: 5}, payload, hdr.framing())
	if withNext {
		encodeRecord(seg[segmentHeaderSize+recordSize(len(payload)):], recordHeader{id: 2, time: 6, items: 1}, AppendFrame(nil, []byte("next")), hdr.framing())
	}
	seg[segmentHeaderSize+8] ^= 0x10
	return seg
}

// TestSaltedScanStepsOverForgedRecords: in a salted segment, records
// forged inside a damaged record's payload (unsalted, or under a wrong
// guess of the salt) are never taken by the look-ahead, while an intact
// record after the damage still is. In an unsalted (version 2) segment,
// still read, the same forgery is taken: such segments stay forgeable
// until drained.
func TestSaltedScanStepsOverForgedRecords(t *testing.T) {
	const salt = 0xC0FFEE
	for name, guess := range map[string]recordFraming{
		"unsalted forgery":  {},
		"wrong salt guess":  framingOf(salt + 1),
		"another salt":      framingOf(1),
		"salt's mask alone": {mask: framingOf(salt).mask},
	} {
		t.Run(name, func(t *testing.T) {
			for _, id := range []uint64{1, 2} {
				p := forgedInside(id, guess)
				s, err := scanSegment(damagedSegment(salt, p, false), 1, 1<<20, nil)
				require.NoError(t, err)
				require.NotNil(t, s.damage)
				require.Equal(t, int64(segmentHeaderSize), s.damage.Offset)
				require.Zero(t, s.records, "a record forged inside the payload was taken (id %d)", id)
				require.Empty(t, s.holes)

				// An intact record after the damaged one is found.
				s, err = scanSegment(damagedSegment(salt, p, true), 1, 1<<20, nil)
				require.NoError(t, err)
				require.Equal(t, 1, s.records)
				require.Equal(t, uint64(2), s.lastID)
				require.Len(t, s.holes, 1)
				require.Equal(t, int64(segmentHeaderSize+recordSize(len(p))), s.holes[0].resume)
			}
		})
	}
	t.Run("version 2 stays forgeable", func(t *testing.T) {
		s, err := scanSegment(damagedSegment(0, forgedInside(2, recordFraming{}), false), 1, 1<<20, nil)
		require.NoError(t, err)
		require.Equal(t, 1, s.records, "the premise: an unsalted forgery verifies")
	})
}

// TestSaltedSegmentsOnDisk: every file the Log writes in the clear (a
// segment, a dead letter) is version 4 with a salt, each file its own
// (two equal salts among a few files: a 2^-32 chance per pair).
func TestSaltedSegmentsOnDisk(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4096, NoSync: true}
	l := openT(t, dir, opts)
	for i := 0; i < 200; i++ {
		_, err := l.Append(payloadFor(i))
		require.NoError(t, err)
	}
	dead, err := l.DeadLetter(AppendFrame(nil, []byte("dead")), DeadMeta{Reason: "test"})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	segs, err := listSegments(dir)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(segs), 3)
	deadSegs, err := listSegments(filepath.Join(dir, deadDirName))
	require.NoError(t, err)
	require.Len(t, deadSegs, 1)
	require.Equal(t, dead, deadSegs[0].firstID)
	deadSegs[0].name = filepath.Join(deadDirName, deadSegs[0].name)
	salts := map[uint32]bool{}
	for _, sf := range append(segs, deadSegs...) {
		b, err := os.ReadFile(filepath.Join(dir, sf.name))
		require.NoError(t, err)
		require.Equal(t, uint16(segmentVersion), binary.LittleEndian.Uint16(b[4:6]))
		h, err := parseSegmentHeader(b)
		require.NoError(t, err)
		require.NotZero(t, h.salt)
		salts[h.salt] = true
		// The id word is masked: never the id itself.
		require.NotEqual(t, sf.firstID, binary.LittleEndian.Uint64(b[segmentHeaderSize:]))
	}
	require.Len(t, salts, len(segs)+1, "two files share a salt")

	// The dead letter reads back under its salt.
	_, items, err := ReadDeadLetter(dir, dead)
	require.NoError(t, err)
	require.Equal(t, AppendFrame(nil, []byte("dead")), items)
}

// TestOldSegmentRepairedIntoSaltedFormat: a damaged unsalted segment (the
// fuzz corpus's, written before the salt) is repaired into a salted
// version 4 file holding its intact records, which replay; the next Open
// finds no damage.
func TestOldSegmentRepairedIntoSaltedFormat(t *testing.T) {
	seg := corpusSegment(t, "codec-none")
	require.Less(t, binary.LittleEndian.Uint16(seg[4:6]), uint16(segmentVersionSealed)) // version 1 or 2
	full := make([]byte, max(align8(int64(len(seg))), int64(binary.LittleEndian.Uint64(seg[16:24]))))
	copy(full, seg)
	dir := t.TempDir()
	path := filepath.Join(dir, segmentName(1))
	require.NoError(t, os.WriteFile(path, full, 0o600))
	l := openT(t, dir, smallOpts()) // an ack log, so that losses are exact
	require.NoError(t, l.Close())
	r, err := Inspect(dir)
	require.NoError(t, err)
	require.Len(t, r.Segments, 1)
	require.True(t, r.Segments[0].Unsalted)
	// Flip a timestamp bit in the second record.
	_, _, size, err := decodeRecord(full[segmentHeaderSize:], 1<<20, 0, recordFraming{})
	require.NoError(t, err)
	full[segmentHeaderSize+size+8] ^= 0x10
	require.NoError(t, os.WriteFile(path, full, 0o600))

	l = openT(t, dir, smallOpts())
	st := l.Stats()
	require.Equal(t, uint64(1), st.Corrupt)
	require.Equal(t, uint64(1), st.Quarantined)
	require.Equal(t, []uint64{1, 3, 4}, sortedIDs(replayAll(t, l)))
	require.NoError(t, l.Close())

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	h, err := parseSegmentHeader(b)
	require.NoError(t, err)
	require.Equal(t, uint16(segmentVersion), binary.LittleEndian.Uint16(b[4:6]))
	require.NotZero(t, h.salt)
	require.NotZero(t, h.flags&segmentRepaired)
	s, err := scanSegment(b, 1, 1<<20, nil)
	require.NoError(t, err)
	require.Nil(t, s.damage)
	require.Equal(t, 4, s.records) // 1, the gap record for 2, 3, 4

	r, err = Inspect(dir)
	require.NoError(t, err)
	require.False(t, r.Segments[0].Unsalted)
	require.False(t, r.Damaged())

	l = openT(t, dir, smallOpts())
	require.Zero(t, l.Stats().Corrupt)
	require.Equal(t, []uint64{1, 3, 4}, sortedIDs(replayAll(t, l)))
	require.NoError(t, l.Close())
}
