cdef object apply_into(object current, bint missing, object ops, list errors)
