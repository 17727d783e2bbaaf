// Package encodeprofile tells each stream's encode profile — encoder,
// preset, output ladder, hwaccel — and which place told each value, from
// three places in order of trust:
//
//  1. the ingest URL's query, as the caller declares it (FromQuery):
//     ?encoder=libx264&preset=medium&ladder=1280x720@30,640x360@30. A
//     value outside its bounded domain is an error matching ErrInvalid
//     (a *ParamError naming the parameter): answer it with 400;
//  2. ffmpeg's stderr header, fed line by line (Stderr): each output
//     stream's encoder, size, rate and target bit rate after filters.
//     Absent below -loglevel info; it never shows the preset;
//  3. the linked process's command line (FromProcess, FromArgs), read as
//     ffmpeg binds options to inputs and outputs; a form it does not
//     understand (scale=-2:540, iw/2, -filter_complex_script, HLS
//     -var_stream_map, tee) is Unknown, never a guess.
//
// Merge takes each field from the most trusted place that knows it.
//
// Every label is from a bounded domain (Encoders, Presets, Hwaccels, the
// canonical ladder "WxH@fps,..." of at most MaxRungs rungs with "?" for an
// unknown part, and Unknown, Other, Mixed, Default, None); numbers
// (sizes, rates, bit rates) are plain numbers. Nothing in a Profile is
// text taken from a URL, path, stream key, metadata, header, filtergraph
// or log line, so a Profile can be exported as it is. Labels from many
// streams still need one bound more: a Ladders registry admits at most N
// distinct ladders (DefaultMaxLadders) before answering Other.
//
// Wiring, for the ffmpeg hub, energy per encode and the instruments:
//
//	ladders := encodeprofile.NewLadders(flagMaxLadders)          // one per exporter
//	url, err := encodeprofile.FromQuery(r.URL.Query())           // ingest: err → 400, counted
//	var hdr encodeprofile.Stderr                                 // per connection carrying stderr
//	hdr.Line(line)                                               // each line; Reset at a new encode
//	cmd, err := encodeprofile.FromProcess("/proc", pid)          // once per linked ffmpeg
//	p := encodeprofile.Merge(url, hdr.Profile(), cmd)
//	labels := [...]string{p.Encoder.Label, p.Preset.Label, ladders.Admit(p.Ladder.Label), p.Sources()}
//	if px, ok := p.PixelsPerFrame(); ok {
//		pixels += px * framesDelta // frame= counts the first video output only
//	}
//
// Bit rate and CRF are per-output numbers (Output.BitrateBPS, Output.CRF),
// never labels: serve them as gauges or log them, not as attributes.
//
// Calling conventions: FromQuery, FromArgs and FromProcess keep no state
// and may run concurrently; a Stderr belongs to one connection (not safe
// for concurrent use); Ladders is safe for concurrent use.
package encodeprofile
