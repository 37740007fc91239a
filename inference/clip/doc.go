// Package clip runs Immich's CLIP models: the image encoder ([Visual]) and
// the text encoder ([Textual]) of a model folder laid out as Immich's cache
// (<cache>/clip/<name>/{visual,textual}/...). Both return the graph's
// output, which Immich's exports already L2-normalise.
//
// The visual side reproduces Immich's preprocessing exactly, not merely
// closely: the image is decoded as PIL does ([imaging.Decode]), its shortest
// side scaled to the model's size with PIL's antialiased bicubic
// ([imaging.Resampler], which matches Pillow bit for bit), the other side
// to int(long/short*size), the centre square cropped as crop_pil does, and
// each channel normalised with numpy's float32 steps, (x/255 - mean)/std.
// The tests compare every step with goldens that scripts/golden_clip.py
// produces with PIL and numpy.
package clip
