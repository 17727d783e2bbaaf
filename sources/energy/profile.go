package energy

import (
	"cmp"
	"slices"
	"time"

	"github.com/ffmpeg-rtmp/worker-exporters/sources/encodeprofile"
	"github.com/ffmpeg-rtmp/worker-exporters/sources/ffmpeg"
)

// What each encoder, preset and ladder costs, live: every window adds each
// encode's energy, frames, pixels and time to its configuration's totals,
// which outlive the streams, so that a day of production encodes ranks the
// configurations.

// MaxConfigurations bounds the configurations kept apart; later ones are
// added up under Other for every label.
const MaxConfigurations = 128

// Configuration is the totals of every encode with one profile.
type Configuration struct {
	Encoder, Preset, Ladder string // bounded labels (encodeprofile)
	Energy                  [NumDevices][NumModes]float64
	HasEnergy               [NumDevices]bool
	Pixels                  float64 // pixels encoded across every rung
	Frames                  float64 // frames of the first video output
	Seconds                 float64 // encode time, summed over encodes (concurrency)
}

type configKey struct{ encoder, preset, ladder string }

// profileOf is e's encode profile now: what the hub heard (the ingest
// URL, ffmpeg's stderr header) merged with what its command line said.
func profileOf(hs *ffmpeg.StreamSnapshot, e *encode) encodeprofile.Profile {
	if hs == nil {
		return e.cmdline
	}
	return encodeprofile.Merge(hs.Profile, e.cmdline)
}

// readCmdline takes the encode's profile from the command line of the
// first linked process that is ffmpeg, once.
func (s *Source) readCmdline(e *encode) {
	if e.hasCmdline {
		return
	}
	for _, p := range e.procs {
		if !p.linked {
			continue
		}
		if prof, err := encodeprofile.FromProcess(s.cfg.Proc.Root(), p.PID); err == nil {
			e.cmdline, e.hasCmdline = prof, true
			return
		}
	}
}

// account adds each encode's window to its configuration: the energy the
// window charged it, its new frames and the pixels they stand for, and the
// window's time while it was live.
func (s *Source) account(streams []ffmpeg.StreamSnapshot, window time.Duration) {
	byName := make(map[string]*ffmpeg.StreamSnapshot, len(streams))
	for i := range streams {
		byName[streams[i].Name] = &streams[i]
	}
	for name, e := range s.encodes {
		hs := byName[name]
		var frames float64
		if hs != nil && hs.Has(ffmpeg.Frames) {
			frames = hs.Values[ffmpeg.Frames]
		}
		newFrames := max(frames-e.frames, 0)
		if frames < e.frames { // frame= restarted: a new encode under the name
			newFrames = frames
		}
		e.frames = frames
		prof := profileOf(hs, e)
		e.profile = prof
		var pixels float64
		if px, ok := prof.PixelsPerFrame(); ok {
			pixels = px * newFrames
			e.pixels += pixels
			e.hasPixels = true
		}
		charged := e.windowEnergy != [NumDevices][NumModes]float64{}
		if !charged && newFrames == 0 && !e.active {
			continue
		}
		c := s.configuration(prof)
		e.labels = [4]string{c.Encoder, c.Preset, c.Ladder, prof.Sources()}
		for d := range NumDevices {
			for m := range NumModes {
				c.Energy[d][m] += e.windowEnergy[d][m]
			}
			c.HasEnergy[d] = c.HasEnergy[d] || e.hasEnergy[d]
		}
		c.Frames += newFrames
		c.Pixels += pixels
		if e.active && window > 0 {
			c.Seconds += window.Seconds()
		}
		e.windowEnergy = [NumDevices][NumModes]float64{}
	}
}

// configuration is prof's totals, created on first use within
// MaxConfigurations.
func (s *Source) configuration(prof encodeprofile.Profile) *Configuration {
	k := configKey{label(prof.Encoder.Label), label(prof.Preset.Label), s.ladders.Admit(label(prof.Ladder.Label))}
	if c := s.configs[k]; c != nil {
		return c
	}
	if len(s.configs) >= MaxConfigurations-1 {
		k = configKey{encodeprofile.Other, encodeprofile.Other, encodeprofile.Other}
		if c := s.configs[k]; c != nil {
			return c
		}
	}
	c := &Configuration{Encoder: k.encoder, Preset: k.preset, Ladder: k.ladder}
	s.configs[k] = c
	return c
}

func label(l string) string { return cmp.Or(l, encodeprofile.Unknown) }

// configurations is every configuration's totals, sorted.
func (s *Source) configurations() []Configuration {
	out := make([]Configuration, 0, len(s.configs))
	for _, c := range s.configs {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Configuration) int {
		return cmp.Or(cmp.Compare(a.Encoder, b.Encoder), cmp.Compare(a.Preset, b.Preset), cmp.Compare(a.Ladder, b.Ladder))
	})
	return out
}
