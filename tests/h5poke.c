/* Test helper: edits one value of an HDF5 file in place, to make the bad checkpoints of
 * tests/bad_inputs.sh from a good one without Python.
 *
 *   h5poke FILE /group@attr VALUE        set a scalar attribute (integer, float or string, as it is typed)
 *   h5poke FILE /path/dataset[I] VALUE   set element I (flat index) of a dataset
 *   h5poke FILE /path/dataset --extend N grow a 1-D extendible dataset to N entries (new ones zero)
 *   h5poke FILE OBJECT --delete          remove the attribute or the link
 *
 * Numbers are read with strtod/strtoll, so "nan", "inf" and "-5" work. Exit 0, or 1 with a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

static int fail(const char *what, const char *object) {
    fprintf(stderr, "h5poke: %s: %s\n", object, what);
    return 1;
}

/* Writes text into the attribute or dataset `obj` (element `index` of a dataset), as its type class says. */
static int write_value(hid_t obj, int is_attr, hssize_t index, const char *text, const char *name) {
    hid_t type = is_attr ? H5Aget_type(obj) : H5Dget_type(obj);
    hid_t space = is_attr ? H5Aget_space(obj) : H5Dget_space(obj);
    const H5T_class_t cls = H5Tget_class(type);
    const hssize_t points = H5Sget_simple_extent_npoints(space);
    int rc = 1;
    if (index < 0 || index >= points) {
        rc = fail("index out of range", name);
    } else if (cls == H5T_STRING && is_attr && points == 1) {
        if (H5Tis_variable_str(type) > 0) rc = H5Awrite(obj, type, &text) < 0;
        else {
            /* fixed-length (checkpoint format 2): NUL-padded to the type's size, which the caller made
             * large enough */
            const size_t size = H5Tget_size(type);
            char *buf = calloc(1, size + 1);
            if (!buf || strlen(text) > size) rc = fail("string longer than its fixed-length type", name);
            else {
                memcpy(buf, text, strlen(text));
                rc = H5Awrite(obj, type, buf) < 0;
            }
            free(buf);
        }
    } else if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
        const hid_t mtype = cls == H5T_INTEGER ? H5T_NATIVE_LLONG : H5T_NATIVE_DOUBLE;
        long long i = strtoll(text, NULL, 10);
        double d = strtod(text, NULL);
        void *value = cls == H5T_INTEGER ? (void *)&i : (void *)&d;
        if (is_attr) {
            rc = points != 1 ? fail("not a scalar attribute", name) : H5Awrite(obj, mtype, value) < 0;
        } else {
            hsize_t one[1] = {1}, coord[H5S_MAX_RANK];
            const int ndim = H5Sget_simple_extent_ndims(space);
            hsize_t dims[H5S_MAX_RANK];
            H5Sget_simple_extent_dims(space, dims, NULL);
            /* the flat index as coordinates, row-major */
            hsize_t rest = (hsize_t)index;
            for (int k = ndim - 1; k >= 0; k--) {
                coord[k] = rest % dims[k];
                rest /= dims[k];
            }
            if (ndim == 0) {
                rc = H5Dwrite(obj, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, value) < 0;
            } else {
                hid_t mem = H5Screate_simple(1, one, NULL);
                H5Sselect_elements(space, H5S_SELECT_SET, 1, coord);
                rc = H5Dwrite(obj, mtype, mem, space, H5P_DEFAULT, value) < 0;
                H5Sclose(mem);
            }
        }
    } else {
        rc = fail("unsupported type", name);
    }
    H5Sclose(space);
    H5Tclose(type);
    return rc;
}

/* HDF5 1.10 cannot H5Awrite some attributes of files written through the core driver ("can't locate
 * open attribute"): the attribute is deleted and created again with its type and shape. */
static int set_attribute(hid_t file, const char *owner, const char *attr, const char *value, const char *name) {
    hid_t a = H5Aopen_by_name(file, owner, attr, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return fail("no such attribute", name);
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    H5Aclose(a);
    /* a fixed-length string attribute is recreated as long as the new value needs */
    if (H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) <= 0 && strlen(value) + 1 > H5Tget_size(type)) {
        hid_t longer = H5Tcopy(type);
        H5Tclose(type);
        type = longer;
        if (H5Tset_size(type, strlen(value) + 1) < 0) fail("cannot lengthen the string type", name);
    }
    int rc = 1;
    hid_t obj = H5Oopen(file, owner, H5P_DEFAULT);
    if (obj >= 0 && H5Adelete(obj, attr) >= 0 &&
        (a = H5Acreate2(obj, attr, type, space, H5P_DEFAULT, H5P_DEFAULT)) >= 0) {
        rc = write_value(a, 1, 0, value, name);
        H5Aclose(a);
    }
    if (obj >= 0) H5Oclose(obj);
    H5Tclose(type);
    H5Sclose(space);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 4 || (strcmp(argv[3], "--extend") == 0 && argc != 5)) {
        fprintf(stderr, "usage: h5poke FILE OBJECT[@ATTR|[I]] VALUE|--delete|--extend N\n");
        return 2;
    }
    const char *path = argv[1], *value = argv[3];
    char object[1024];
    snprintf(object, sizeof object, "%s", argv[2]);
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (file < 0) return fail("cannot open", path);
    char *at = strchr(object, '@'), *bracket = strchr(object, '[');
    int rc;
    if (at) {
        *at = '\0';
        const char *owner = object[0] ? object : "/";
        if (strcmp(value, "--delete") == 0) {
            rc = H5Adelete_by_name(file, owner, at + 1, H5P_DEFAULT) < 0;
        } else {
            rc = set_attribute(file, owner, at + 1, value, argv[2]);
        }
    } else if (strcmp(value, "--delete") == 0) {
        rc = H5Ldelete(file, object, H5P_DEFAULT) < 0;
    } else {
        hssize_t index = 0;
        if (bracket) {
            index = strtoll(bracket + 1, NULL, 10);
            *bracket = '\0';
        }
        hid_t d = H5Dopen2(file, object, H5P_DEFAULT);
        if (d < 0) {
            rc = fail("no such dataset", argv[2]);
        } else if (strcmp(value, "--extend") == 0) {
            hsize_t n[1] = {(hsize_t)strtoull(argv[4], NULL, 10)};
            rc = H5Dset_extent(d, n) < 0;
        } else {
            rc = write_value(d, 0, index, value, argv[2]);
        }
        if (d >= 0) H5Dclose(d);
    }
    if (H5Fclose(file) < 0) rc = 1;
    if (rc) fprintf(stderr, "h5poke: %s %s %s failed\n", path, argv[2], value);
    return rc;
}
