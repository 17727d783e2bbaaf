package encodeprofile

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The ingest URL's query parameters a caller declares its encode with.
const (
	ParamEncoder = "encoder"
	ParamPreset  = "preset"
	ParamLadder  = "ladder"
)

// ErrInvalid is matched (errors.Is) by every error FromQuery returns: the
// ingest handler answers it with 400.
var ErrInvalid = errors.New("invalid encode profile")

// ParamError says which parameter does not fit and why. It never repeats
// the value: the caller knows what it sent, and the message may be logged.
type ParamError struct {
	Param  string
	Reason string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("invalid encode profile: parameter %q %s", e.Param, e.Reason)
}

func (e *ParamError) Is(target error) bool { return target == ErrInvalid }

// FromQuery reads the profile a caller declares in the ingest URL's query
// (?encoder=libx264&preset=medium&ladder=1280x720@30,640x360@30). Each
// parameter is optional; one that is given must fit its bounded domain:
// encoder one of Encoders (or mixed, other); preset one of the encoder's
// Presets (any encoder's when the encoder is not given) or default; ladder
// 1 to MaxRungs rungs WxH@fps, W and H 1..MaxDimension, fps 0.01 to
// MaxFPS, "?" for a part the caller does not know. List the rungs in
// output order: the first is the output whose frames ffmpeg's frame=
// counts (the label sorts them; PixelsPerFrame needs the first). Other
// query parameters are ignored.
func FromQuery(q url.Values) (Profile, error) {
	get := func(name string) (string, bool, error) {
		vs, ok := q[name]
		switch {
		case !ok:
			return "", false, nil
		case len(vs) != 1:
			return "", false, &ParamError{name, "is given more than once"}
		case vs[0] == "":
			return "", false, &ParamError{name, "is empty"}
		}
		return vs[0], true, nil
	}
	p := fromOutputs(FromURL, nil, false)
	p.Hwaccel.From = FromNowhere

	enc, hasEnc, err := get(ParamEncoder)
	if err != nil {
		return Profile{}, err
	}
	if hasEnc {
		if !slices.Contains(Encoders, enc) && enc != Mixed && enc != Other {
			return Profile{}, &ParamError{ParamEncoder, "is not a known encoder: want one of " + strings.Join(Encoders, ", ") + ", mixed, other"}
		}
		p.Encoder.Label = enc
	}
	preset, hasPreset, err := get(ParamPreset)
	if err != nil {
		return Profile{}, err
	}
	if hasPreset {
		vocab := Presets(Unknown)
		if hasEnc {
			vocab = Presets(enc)
		}
		if preset != Default && !slices.Contains(vocab, preset) {
			if len(vocab) == 0 {
				return Profile{}, &ParamError{ParamPreset, "must be default: " + enc + " has no presets"}
			}
			return Profile{}, &ParamError{ParamPreset, "is not a preset of " + either(hasEnc, enc, "any known encoder") + ": want default or one of " + strings.Join(vocab, ", ")}
		}
		p.Preset.Label = preset
	}
	ladder, hasLadder, err := get(ParamLadder)
	if err != nil {
		return Profile{}, err
	}
	if hasLadder {
		outs, err := parseLadder(ladder)
		if err != nil {
			return Profile{}, err
		}
		for i := range outs {
			outs[i].Encoder, outs[i].Preset = p.Encoder.Label, p.Preset.Label
		}
		p.Ladder.Label, p.Outputs = ladderLabel(outs), outs
	}
	return p, nil
}

func either(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

func parseLadder(s string) ([]Output, error) {
	rungs := strings.Split(s, ",")
	if len(rungs) > MaxRungs {
		return nil, &ParamError{ParamLadder, fmt.Sprintf("has more than %d rungs", MaxRungs)}
	}
	outs := make([]Output, 0, len(rungs))
	for i, r := range rungs {
		o, ok := parseRung(r)
		if !ok {
			return nil, &ParamError{ParamLadder, fmt.Sprintf("rung %d is not WxH@fps (W and H 1-%d, fps 0.01-%d, ? for an unknown part)", i+1, MaxDimension, MaxFPS)}
		}
		outs = append(outs, o)
	}
	return outs, nil
}

func parseRung(r string) (Output, bool) {
	size, fps, ok := strings.Cut(r, "@")
	if !ok {
		return Output{}, false
	}
	ws, hs, ok := strings.Cut(size, "x")
	if !ok {
		return Output{}, false
	}
	var o Output
	if o.Width, ok = dimension(ws); !ok {
		return Output{}, false
	}
	if o.Height, ok = dimension(hs); !ok {
		return Output{}, false
	}
	if fps != "?" {
		f, err := strconv.ParseFloat(fps, 64)
		if err != nil || !fpsKnown(f) || !plainDecimal(fps) {
			return Output{}, false
		}
		o.FPS = f
	}
	return o, true
}

// dimension parses W or H: 1..MaxDimension in plain digits, or "?" (0).
func dimension(s string) (int, bool) {
	if s == "?" {
		return 0, true
	}
	if !plainDecimal(s) || strings.Contains(s, ".") {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 || v > MaxDimension {
		return 0, false
	}
	return v, true
}

// plainDecimal: digits with at most one point, nothing else (no sign,
// exponent, hex, Inf or NaN that strconv would take).
func plainDecimal(s string) bool {
	if s == "" || len(s) > 12 {
		return false
	}
	points := 0
	for _, c := range []byte(s) {
		switch {
		case c == '.':
			points++
		case c < '0' || c > '9':
			return false
		}
	}
	return points <= 1 && s[0] != '.' && s[len(s)-1] != '.'
}
