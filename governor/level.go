package governor

import "strconv"

// Level is the memory pressure level. The zero value is LevelNormal.
type Level int32

const (
	// LevelNormal: below the soft threshold (or, coming down, below it minus the
	// hysteresis margin). The queue runs unhindered.
	LevelNormal Level = iota
	// LevelSoft: between soft and hard. The queue's slow path waits Delay() and
	// a rate-limited warning is logged.
	LevelSoft
	// LevelHard: at or above hard (or, coming down, above hard minus the
	// margin). The queue applies its Policy: Reject, Spill or Block.
	LevelHard
)

// String returns the level's name.
func (l Level) String() string {
	switch l {
	case LevelNormal:
		return "normal"
	case LevelSoft:
		return "soft"
	case LevelHard:
		return "hard"
	}
	return "Level(" + strconv.Itoa(int(l)) + ")"
}
