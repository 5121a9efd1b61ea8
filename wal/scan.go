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
	header   segmentHeader
	headerOK bool
	firstID  uint64 // header's first id, or the file name's if the header is damaged
	lastID   uint64 // last id of the intact records; firstID-1 if it holds none
	records  int    // intact records, gap records included
	dataRecs int    // intact data records
	keyed    int    // of those, keyed records (format.go)
	end      int64  // offset just past the last intact record
	damage   *Damage
	// holes are the damaged stretches the scan stepped over to the next
	// intact record, in order: every intact record is kept, and only the
	// ids of the damaged records are lost (the ids in holes).
	holes []scanHole
	// Records that verify after the last intact one but could not be
	// taken into the chain (gap records, or any record in a scan that
	// does not resume): evidence of ids issued.
	afterRecs int
	afterMax  uint64

	// nextData(off) returns the first extent at or after off that may
	// hold data, [start, end) (start is the file's size if none); nil: no
	// probe. dataEnd is the end of the extent it last reported: zeros
	// before it are read, not asked about again.
	nextData func(off int64) (start, end int64)
	dataEnd  int64
	noResume bool // stop at the first damage (dead-letter files)
	// bounded: the segment's first id is known and it was never
	// repaired, so no record in it can have an id above idBound's.
	bounded bool
	frame   recordFraming // the records' framing (format.go)
}

// idBound is the highest id a record at offset off of a segment written
// by a Log (not a repair) can have: every record takes at least
// recordSize(0) bytes and ids are consecutive from the first, so a record
// found further from the first id than the bytes before it could hold is
// not one the Log wrote. Item bytes are user data, and a record found by
// the look-ahead after damage may be a forgery inside a payload; this
// bound keeps such a forgery from naming an id far ahead (holes of 2^64
// ids, recovery allocating per id, the next id wrapping to zero). Gap
// records stand for many ids in little space, so a repaired segment (the
// only kind that holds them) is not bounded. A dead-letter file holds one
// record, whose id is the file's.
func (s *segmentScan) idBound(off int64) uint64 {
	if s.noResume {
		return s.firstID
	}
	return s.firstID + uint64(max(off-segmentHeaderSize, 0))/uint64(recordSize(0))
}

// plausible reports whether a record with this id can be at off (idBound).
func (s *segmentScan) plausible(id uint64, off int64) bool {
	return !s.bounded || id <= s.idBound(off)
}

// scanHole is damage between intact records: the bytes [cut, resume) did
// not verify (or held an id out of sequence), and the ids lo..hi (none if
// lo > hi) of the records they held are lost.
type scanHole struct {
	cut, resume int64
	lo, hi      uint64
	damage      Damage
}

// holeOf returns the hole whose ids include id, or nil.
func (s *segmentScan) holeOf(id uint64) *scanHole {
	for i := range s.holes {
		if h := &s.holes[i]; h.lo <= id && id <= h.hi {
			return h
		}
	}
	return nil
}

// keptRuns returns the ids of the intact records up to last as runs.
func (s *segmentScan) keptRuns(last uint64) []span {
	var out []span
	lo := s.firstID
	for _, h := range s.holes {
		if h.lo > h.hi {
			continue
		}
		if h.lo > lo {
			out = append(out, span{lo, min(h.lo-1, last)})
		}
		lo = h.hi + 1
	}
	if lo <= last {
		out = append(out, span{lo, last})
	}
	return out
}

// recordVisitor is called for every intact record in order; off is the
// record's offset in the segment, stored its payload as stored (aliasing
// the segment bytes). Returning an error stops the scan with it.
type recordVisitor func(off int64, h recordHeader, stored []byte) error

// scanSegment verifies a segment held in data. nameID is the first id its
// file name claims (0: unknown). maxLen bounds a record's stored length.
// It never panics and never allocates in proportion to a length field.
func scanSegment(data []byte, nameID uint64, maxLen int, visit recordVisitor) (segmentScan, error) {
	return scanSegmentSkipping(data, nameID, maxLen, visit, nil)
}

// scanSegmentSkipping is scanSegment with a hint for the look-ahead after
// damage or the end of the log: nextData(off) returns the first extent at
// or after off that may hold data (lseek SEEK_DATA, then SEEK_HOLE), so the
// unwritten tail of a preallocated segment is skipped without faulting it
// into the page cache. The result is the same as scanSegment's as long as
// what nextData calls a hole reads as zeros.
func scanSegmentSkipping(data []byte, nameID uint64, maxLen int, visit recordVisitor, nextData func(int64) (int64, int64)) (segmentScan, error) {
	s := segmentScan{nextData: nextData}
	return s, s.run(data, nameID, maxLen, visit)
}

// scanDeadSegment is scanSegment for a dead-letter file, which holds one
// record: the scan stops at the first damage (what follows it is only
// counted), since no later record could stand for the dead letter.
func scanDeadSegment(data []byte, nameID uint64, maxLen int, visit recordVisitor) (segmentScan, error) {
	s := segmentScan{noResume: true}
	return s, s.run(data, nameID, maxLen, visit)
}

func (s *segmentScan) run(data []byte, nameID uint64, maxLen int, visit recordVisitor) error {
	s.firstID = nameID
	h, err := parseSegmentHeader(data)
	if err != nil {
		s.damage = &Damage{Offset: 0, Reason: err.Error()}
		if len(data) >= segmentHeaderSize && binary.LittleEndian.Uint16(data[4:6]) == segmentVersion {
			// The salt may have survived the damage: try it, to count
			// the records that follow as evidence.
			s.frame = framingOf(binary.LittleEndian.Uint32(data[24:28]))
		}
		// Unknown flags: bounded as if never repaired (a repaired file
		// whose header is then damaged may under-count evidence).
		s.bounded = s.firstID != 0
		if s.firstID == 0 {
			s.firstID = 1
		}
		s.lastID = s.firstID - 1
		s.count(data, segmentHeaderSize, maxLen)
		return nil
	}
	s.header, s.headerOK, s.frame = h, true, h.framing()
	s.bounded = h.flags&segmentRepaired == 0
	if nameID != 0 && h.firstID != nameID {
		s.damage = &Damage{Offset: 8, Reason: fmt.Sprintf("header first id %d, file name says %d", h.firstID, nameID)}
		s.lastID = s.firstID - 1
		s.count(data, segmentHeaderSize, maxLen)
		return nil
	}
	s.firstID = h.firstID
	s.lastID = h.firstID - 1
	pos := int64(segmentHeaderSize)
	s.end = pos
	for pos < int64(len(data)) {
		rh, stored, size, err := decodeRecord(data[pos:], maxLen, s.lastID+1, s.frame)
		var bad string
		switch {
		case errors.Is(err, errEndOfLog):
			// The end of the log, unless intact records follow.
			bad = "zero record id followed by valid records"
		case err != nil:
			bad = err.Error()
		case !s.plausible(rh.id, pos):
			bad = fmt.Sprintf("record id %d cannot be at offset %d (at most %d)", rh.id, pos, s.idBound(pos))
		case rh.kind == kindData && rh.id > s.lastID+1 && !s.noResume:
			// The record is intact; the ids before it are missing (the
			// bytes that held them are gone, or never held them).
			s.addHole(pos, pos, rh.id, fmt.Sprintf("record id %d, want %d", rh.id, s.lastID+1))
		case rh.kind == kindData && rh.id != s.lastID+1:
			bad = fmt.Sprintf("record id %d, want %d", rh.id, s.lastID+1)
		case rh.kind == kindGap && rh.id <= s.lastID:
			bad = fmt.Sprintf("gap record id %d, want > %d", rh.id, s.lastID)
		}
		if bad != "" {
			endOfLog := errors.Is(err, errEndOfLog)
			if s.noResume {
				if s.count(data, pos+8, maxLen) || !endOfLog {
					s.damage = &Damage{Offset: pos, Reason: bad}
				}
				return nil
			}
			next, id, ok := s.resync(data, pos+8, maxLen)
			if !ok {
				if !endOfLog {
					s.setDamage(Damage{Offset: pos, Reason: bad})
				}
				return nil
			}
			s.addHole(pos, next, id, bad)
			pos = next
			continue
		}
		if visit != nil {
			if err := visit(pos, rh, stored); err != nil {
				return err
			}
		}
		s.lastID = rh.id
		s.records++
		if rh.kind == kindData {
			s.dataRecs++
			if rh.keyed {
				s.keyed++
			}
		}
		pos += size
		s.end = pos
	}
	if h.size != uint64(len(data)) {
		// The records ended exactly where the file does: it was cut at a
		// record boundary (or grown). What was beyond is gone.
		s.setDamage(Damage{Offset: int64(len(data)), Reason: fmt.Sprintf("file is %d bytes, its header says %d", len(data), h.size)})
	}
	return nil
}

// setDamage records d unless an earlier damage is recorded already.
func (s *segmentScan) setDamage(d Damage) {
	if s.damage == nil {
		s.damage = &d
	}
}

// addHole records damage from cut up to the intact record at resume,
// whose id is next: the ids between the last intact record and it are
// lost.
func (s *segmentScan) addHole(cut, resume int64, next uint64, reason string) {
	d := Damage{Offset: cut, Reason: reason}
	s.setDamage(d)
	s.holes = append(s.holes, scanHole{cut: cut, resume: resume, lo: s.lastID + 1, hi: next - 1, damage: d})
	s.lastID = next - 1
}

// resync looks for the next intact data record after damage (or after a
// zero id), at every 8-byte aligned offset from `from`, skipping zeros
// quickly, and returns its offset and id. Only a data record with an id
// above the last intact one can resume the chain: an old record image
// cannot be newer, and a gap record's extent is not known without its
// predecessor. Gap records it passes count as evidence (afterMax) only.
func (s *segmentScan) resync(data []byte, from int64, maxLen int) (int64, uint64, bool) {
	p := align8(from)
	n := int64(len(data))
	for p+recordOverhead <= n {
		word := binary.LittleEndian.Uint64(data[p:])
		if word == 0 {
			p = s.skipZeros(data, p)
			continue
		}
		if id := s.frame.id(word); id <= s.lastID || !s.plausible(id, p) {
			// Checked before the checksum, which may cover megabytes:
			// most offsets of a payload (random bytes above all) fail
			// here, and in a salted segment so does every record forged
			// inside an item, whose id word unmasks to a random id.
			p += 8
			continue
		}
		rh, _, size, err := decodeRecord(data[p:], maxLen, 0, s.frame)
		switch {
		case err != nil || rh.id <= s.lastID || !s.plausible(rh.id, p):
			p += 8
		case rh.kind == kindData:
			return p, rh.id, true
		default:
			s.afterRecs++
			s.afterMax = max(s.afterMax, rh.id)
			p += size
		}
	}
	return 0, 0, false
}

// skipZeros returns the first offset from p (8-byte aligned) whose word is
// not zero (or the last offset with fewer than 8 bytes after it): 64 bytes
// at a time where possible, and whole holes at once when the file system
// can say where the next data is. The probe is made at every page boundary
// the zero run reaches, whatever the run's phase: a run starts 8 bytes
// past a record's start, so a walk in 64-byte steps from there meets a
// page boundary only one time in eight, and reading a preallocated tail
// that was never written faults it all into the page cache (the zero pages
// the file system makes up for it), tens of MiB for one segment.
func (s *segmentScan) skipZeros(data []byte, p int64) int64 {
	const page = 4096
	n := int64(len(data))
	for p+8 <= n {
		lim := min(p&^(page-1)+page, n) // the next page boundary, or the end
		for p+8 <= lim && p%64 != 0 && binary.LittleEndian.Uint64(data[p:]) == 0 {
			p += 8
		}
		for p+64 <= lim && allZero(data[p:p+64]) {
			p += 64
		}
		for p+8 <= lim && binary.LittleEndian.Uint64(data[p:]) == 0 {
			p += 8
		}
		if p != lim || p == n {
			return p
		}
		// Zeros up to a page boundary: ask where the next data is, unless
		// the last answer said this page is data.
		if s.nextData != nil && p >= s.dataEnd {
			start, end := s.nextData(p)
			s.dataEnd = end
			if start > p {
				p = min(align8(start), n&^7) // offsets stay 8-byte aligned
			}
		}
	}
	return p
}

// count looks for valid records after damage that the scan does not take
// (a damaged header, or a dead-letter file), counting them in
// afterRecs/afterMax, and reports whether it found any. Only records with
// ids above the intact ones count: an old record image cannot be newer.
func (s *segmentScan) count(data []byte, from int64, maxLen int) bool {
	found := false
	p := align8(from)
	n := int64(len(data))
	for p+recordOverhead <= n {
		word := binary.LittleEndian.Uint64(data[p:])
		if word == 0 {
			p = s.skipZeros(data, p)
			continue
		}
		if id := s.frame.id(word); id <= s.lastID || id <= s.afterMax || !s.plausible(id, p) {
			p += 8 // before the checksum, as in resync
			continue
		}
		rh, _, size, err := decodeRecord(data[p:], maxLen, 0, s.frame)
		if err != nil || rh.id <= s.lastID || rh.id <= s.afterMax || !s.plausible(rh.id, p) {
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
