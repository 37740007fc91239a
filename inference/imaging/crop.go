package imaging

import "image"

// CenterRect is the box of Immich's crop_pil for a size×size crop of a
// w×h image: left = int(w/2 - size/2), top = int(h/2 - size/2), computed in
// float64 and truncated toward zero as Python's int() does.
func CenterRect(w, h, size int) image.Rectangle {
	left := int(float64(w)/2 - float64(size)/2)
	top := int(float64(h)/2 - float64(size)/2)
	return image.Rect(left, top, left+size, top+size)
}

// Crop returns the part r of im as PIL's Image.crop does: pixels of r
// outside im are black.
func Crop(im *Image, r image.Rectangle) *Image {
	r = r.Canon()
	out := New(r.Dx(), r.Dy())
	if im == nil || out.W == 0 {
		return out
	}
	in := r.Intersect(im.Bounds())
	for y := in.Min.Y; y < in.Max.Y; y++ {
		copy(out.Pix[((y-r.Min.Y)*out.W+in.Min.X-r.Min.X)*3:][:in.Dx()*3], im.Pix[(y*im.W+in.Min.X)*3:])
	}
	return out
}

// CenterCrop is Immich's crop_pil: the size×size centre of im (black where
// im is smaller).
func CenterCrop(im *Image, size int) *Image {
	if im == nil {
		return New(size, size)
	}
	return Crop(im, CenterRect(im.W, im.H, size))
}
