cpdef tuple apply(object current, bint missing, object ops)
