package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Damage locates the first damaged byte of a segment and says what is wrong.
type Damage struct {
	Offset int64  // byte offset in the segment file
	Reason string // human-readable cause
}

// String describes the damage, or "ok" for nil.
func (d *Damage) String() string {
	if d == nil {
		return "ok"
	}
	return fmt.Sprintf("offset %d: %s", d.Offset, d.Reason)
}

// segmentScan is what scanSegment learns about one segment's bytes.
type segmentScan struct {
	header    segmentHeader
	headerOK  bool
	firstID   uint64 // header's first id, or the file name's if the header is damaged
	lastID    uint64 // last id of the intact prefix; firstID-1 if it holds none
	records   int    // intact records in the prefix, gap records included
	dataRecs  int    // intact data records in the prefix
	end       int64  // offset just past the intact prefix
	damage    *Damage
	afterRecs int    // valid records found after the damage
	afterMax  uint64 // highest id among them

	nextData func(int64) int64
}

// recordVisitor is called for every intact record of the prefix; off is the
// record's offset in the segment, stored its payload as stored (aliasing the
// segment bytes). Returning an error stops the scan with it.
type recordVisitor func(off int64, h recordHeader, stored []byte) error

// scanSegment verifies a segment held in data. nameID is the first id its
// file name claims (0: unknown). maxLen bounds a record's stored length.
// It never panics and never allocates in proportion to a length field.
func scanSegment(data []byte, nameID uint64, maxLen int, visit recordVisitor) (segmentScan, error) {
	return scanSegmentSkipping(data, nameID, maxLen, visit, nil)
}

// scanSegmentSkipping is scanSegment with a hint for the look-ahead after
// the end of the log: nextData(off) returns the first offset >= off that
// may hold data (lseek SEEK_DATA), so the unwritten tail of a preallocated
// segment is skipped without faulting it into the page cache.
func scanSegmentSkipping(data []byte, nameID uint64, maxLen int, visit recordVisitor, nextData func(int64) int64) (segmentScan, error) {
	var s segmentScan
	s.nextData = nextData
	s.firstID = nameID
	h, err := parseSegmentHeader(data)
	if err != nil {
		s.damage = &Damage{Offset: 0, Reason: err.Error()}
		if s.firstID == 0 {
			s.firstID = 1
		}
		s.lastID = s.firstID - 1
		s.resync(data, segmentHeaderSize, maxLen)
		return s, nil
	}
	s.header, s.headerOK = h, true
	if nameID != 0 && h.firstID != nameID {
		s.damage = &Damage{Offset: 8, Reason: fmt.Sprintf("header first id %d, file name says %d", h.firstID, nameID)}
		s.lastID = s.firstID - 1
		s.resync(data, segmentHeaderSize, maxLen)
		return s, nil
	}
	s.firstID = h.firstID
	s.lastID = h.firstID - 1
	pos := int64(segmentHeaderSize)
	s.end = pos
	for pos < int64(len(data)) {
		rh, stored, size, err := decodeRecord(data[pos:], maxLen, s.lastID+1)
		if errors.Is(err, errEndOfLog) {
			if s.resync(data, pos+8, maxLen) {
				s.damage = &Damage{Offset: pos, Reason: "zero record id followed by valid records"}
			}
			return s, nil
		}
		switch {
		case err != nil:
			s.damage = &Damage{Offset: pos, Reason: err.Error()}
		case rh.kind == kindData && rh.id != s.lastID+1:
			s.damage = &Damage{Offset: pos, Reason: fmt.Sprintf("record id %d, want %d", rh.id, s.lastID+1)}
		case rh.kind == kindGap && rh.id <= s.lastID:
			s.damage = &Damage{Offset: pos, Reason: fmt.Sprintf("gap record id %d, want > %d", rh.id, s.lastID)}
		}
		if s.damage != nil {
			s.resync(data, pos+8, maxLen)
			return s, nil
		}
		if visit != nil {
			if err := visit(pos, rh, stored); err != nil {
				return s, err
			}
		}
		s.lastID = rh.id
		s.records++
		if rh.kind == kindData {
			s.dataRecs++
		}
		pos += size
		s.end = pos
	}
	if h.size != uint64(len(data)) {
		// The records ended exactly where the file does: it was cut at a
		// record boundary (or grown). What was beyond is gone.
		s.damage = &Damage{Offset: int64(len(data)), Reason: fmt.Sprintf("file is %d bytes, its header says %d", len(data), h.size)}
	}
	return s, nil
}

// resync looks for valid records after damage (or after a zero id), at every
// 8-byte aligned offset from `from`, skipping zeros quickly. It counts them
// in afterRecs/afterMax and reports whether it found any. Only records with
// ids above the intact prefix count: an old record image cannot be newer.
func (s *segmentScan) resync(data []byte, from int64, maxLen int) bool {
	found := false
	p := align8(from)
	n := int64(len(data))
	for p+recordOverhead <= n {
		if binary.LittleEndian.Uint64(data[p:]) == 0 {
			// Skip zero words; 64 bytes at a time where possible, and
			// whole holes at once when the file system can say where the
			// next data is.
			for p+64 <= n && allZero(data[p:p+64]) {
				p += 64
				if s.nextData != nil && p%4096 == 0 {
					if q := s.nextData(p); q > p {
						p = min(align8(q), n)
					}
				}
			}
			for p+8 <= n && binary.LittleEndian.Uint64(data[p:]) == 0 {
				p += 8
			}
			continue
		}
		rh, _, size, err := decodeRecord(data[p:], maxLen, 0)
		if err != nil || rh.id <= s.lastID || rh.id <= s.afterMax {
			p += 8
			continue
		}
		found = true
		s.afterRecs++
		s.afterMax = rh.id
		p += size
	}
	return found
}
