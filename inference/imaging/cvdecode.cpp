#include "cvdecode.h"

#include <stdint.h>
#include <stdio.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

namespace {

// outAllocator hands out one caller-owned buffer to the Mat that
// cv::imdecode creates its result in, and refuses any other size: a
// decoder that reads another size from the file than the header parser
// did can then neither allocate what it read nor write past the buffer.
// Mats the decoders make for themselves use the default allocator.
class outAllocator : public cv::MatAllocator {
  public:
    outAllocator(unsigned char *buf, size_t size) : buf_(buf), size_(size) {}

    cv::UMatData *allocate(int dims, const int *sizes, int type, void *data0, size_t *step, cv::AccessFlag,
                           cv::UMatUsageFlags) const override {
        size_t total = CV_ELEM_SIZE(type);
        for (int i = dims - 1; i >= 0; i--) {
            if (step) {
                if (data0 && step[i] != cv::Mat::AUTO_STEP) {
                    CV_Assert(total <= step[i]);
                    total = step[i];
                } else {
                    step[i] = total;
                }
            }
            total *= sizes[i];
        }
        if (!data0 && total != size_) {
            CV_Error(cv::Error::StsNoMem, "the decoder wants a buffer of another size than the header says");
        }
        cv::UMatData *u = new cv::UMatData(this);
        u->data = u->origdata = data0 ? static_cast<uchar *>(data0) : buf_;
        u->size = total;
        u->flags |= cv::UMatData::USER_ALLOCATED;
        return u;
    }

    bool allocate(cv::UMatData *u, cv::AccessFlag, cv::UMatUsageFlags) const override { return u != nullptr; }

    void deallocate(cv::UMatData *u) const override {
        if (!u) {
            return;
        }
        CV_Assert(u->urefcount == 0);
        CV_Assert(u->refcount == 0);
        delete u; // the memory is the caller's
    }

  private:
    unsigned char *buf_;
    size_t size_;
};

} // namespace

int imaging_imdecode_rgb(const unsigned char *buf, size_t len, int w, int h, unsigned char *out, char *msg,
                         int msglen) {
    try {
        if (len > (size_t)INT32_MAX) {
            snprintf(msg, msglen, "input over 2 GB");
            return -1;
        }
        cv::Mat src(1, (int)len, CV_8UC1, const_cast<unsigned char *>(buf));
        outAllocator alloc(out, (size_t)w * (size_t)h * 3);
        cv::Mat dst;
        dst.allocator = &alloc;
        cv::imdecode(src, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION, &dst);
        if (dst.empty()) {
            snprintf(msg, msglen, "OpenCV could not decode the image");
            return -1;
        }
        if (dst.data != out || dst.rows != h || dst.cols != w || dst.type() != CV_8UC3) {
            snprintf(msg, msglen, "OpenCV decoded %dx%d with %d channels, not the header's %dx%d", dst.cols,
                     dst.rows, dst.channels(), w, h);
            return -1;
        }
        // BGR to RGB in place (cv::cvtColor would copy the source first).
        for (size_t i = 0, n = (size_t)w * (size_t)h * 3; i < n; i += 3) {
            unsigned char b = out[i];
            out[i] = out[i + 2];
            out[i + 2] = b;
        }
        return 0;
    } catch (const cv::Exception &e) {
        snprintf(msg, msglen, "%s", e.err.c_str());
        return -1;
    } catch (...) {
        snprintf(msg, msglen, "OpenCV raised an exception");
        return -1;
    }
}
