#include "minrect.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

int ocr_min_area_rect(const int *xy, int n, float *out) {
    try {
        cv::Mat pts(n, 1, CV_32SC2, const_cast<int *>(xy));
        cv::RotatedRect r = cv::minAreaRect(pts);
        cv::Point2f corners[4];
        r.points(corners);
        out[0] = r.size.width;
        out[1] = r.size.height;
        for (int i = 0; i < 4; i++) {
            out[2 + 2 * i] = corners[i].x;
            out[3 + 2 * i] = corners[i].y;
        }
        return 0;
    } catch (...) {
        return -1;
    }
}
