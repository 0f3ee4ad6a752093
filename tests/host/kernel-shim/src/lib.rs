//! Host stand-in for the parts of the 6.12 `kernel` crate that the pure
//! modules of dm_switch (`ptbl.rs`) use: fallible-allocation `KVVec`,
//! `KBox` with in-place zeroed initialisation, and `Arc`. Same names and signatures, backed by `std`, so `ptbl.rs` compiles
//! unchanged in the host tests.

/// Allocation API (`kernel::alloc`).
pub mod alloc {
    use std::ops::{Deref, DerefMut};

    /// Allocation failure.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AllocError;

    /// Allocation flags (ignored on the host).
    pub mod flags {
        /// Allocation flags.
        #[derive(Debug, Clone, Copy)]
        pub struct Flags(pub u32);
        /// `GFP_KERNEL`.
        pub const GFP_KERNEL: Flags = Flags(0);
    }

    /// `kernel::alloc::KVVec`: a vector whose growth can fail.
    #[derive(Debug)]
    pub struct KVVec<T>(Vec<T>);

    impl<T> KVVec<T> {
        /// An empty vector.
        pub fn new() -> Self {
            Self(Vec::new())
        }

        /// An empty vector with room for `n` elements.
        pub fn with_capacity(n: usize, _f: flags::Flags) -> Result<Self, AllocError> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| AllocError)?;
            Ok(Self(v))
        }

        /// Appends `v`.
        pub fn push(&mut self, v: T, _f: flags::Flags) -> Result<(), AllocError> {
            self.0.try_reserve(1).map_err(|_| AllocError)?;
            self.0.push(v);
            Ok(())
        }
    }

    impl<T> Default for KVVec<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T: Clone> KVVec<T> {
        /// `n` copies of `value`.
        pub fn from_elem(value: T, n: usize, f: flags::Flags) -> Result<Self, AllocError> {
            let mut v = Self::with_capacity(n, f)?;
            v.0.resize(n, value);
            Ok(v)
        }

        /// Appends clones of `other`.
        pub fn extend_from_slice(
            &mut self,
            other: &[T],
            _f: flags::Flags,
        ) -> Result<(), AllocError> {
            self.0.try_reserve(other.len()).map_err(|_| AllocError)?;
            self.0.extend_from_slice(other);
            Ok(())
        }
    }

    /// `kernel::alloc::KBox`: an owned heap value.
    #[derive(Debug)]
    pub struct KBox<T>(pub(crate) Box<T>);

    impl<T> Deref for KBox<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T> DerefMut for KBox<T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.0
        }
    }

    impl<T> Deref for KVVec<T> {
        type Target = [T];
        fn deref(&self) -> &[T] {
            &self.0
        }
    }

    impl<T> DerefMut for KVVec<T> {
        fn deref_mut(&mut self) -> &mut [T] {
            &mut self.0
        }
    }
}

/// In-place initialisation (`kernel::init`), for the zeroed values `ptbl.rs`
/// makes: the value is built on the heap directly (a 4 KiB block would be a
/// large stack temporary in a debug build).
pub mod init {
    use super::alloc::{flags::Flags, KBox};

    /// Types that are valid when all zero.
    pub trait Zeroable: Sized {
        /// A zeroed value on the heap.
        fn boxed_zeroed() -> Box<Self>;
    }

    impl<const N: usize> Zeroable for [u64; N] {
        fn boxed_zeroed() -> Box<Self> {
            match vec![0u64; N].into_boxed_slice().try_into() {
                Ok(words) => words,
                Err(_) => unreachable!("a vector of N words is an array of N words"),
            }
        }
    }

    /// An initialiser of a zeroed `T`.
    pub struct Zeroed<T>(core::marker::PhantomData<T>);

    /// `kernel::init::zeroed`.
    pub fn zeroed<T: Zeroable>() -> Zeroed<T> {
        Zeroed(core::marker::PhantomData)
    }

    /// The error `init` returns (the kernel's `Error`).
    #[derive(Debug)]
    pub struct Error;

    /// `kernel::init::InPlaceInit`, for `KBox` and zeroed initialisers.
    pub trait InPlaceInit<T>: Sized {
        /// Allocates and initialises a `T`.
        fn init(init: Zeroed<T>, flags: Flags) -> Result<Self, Error>;
    }

    impl<T: Zeroable> InPlaceInit<T> for KBox<T> {
        fn init(_init: Zeroed<T>, _flags: Flags) -> Result<Self, Error> {
            Ok(KBox(T::boxed_zeroed()))
        }
    }
}

/// Synchronization (`kernel::sync`).
pub mod sync {
    use super::alloc::{flags::Flags, AllocError};
    use std::ops::Deref;

    /// `kernel::sync::Arc`: a reference-counted pointer with fallible `new`.
    #[derive(Debug)]
    pub struct Arc<T>(std::sync::Arc<T>);

    impl<T> Arc<T> {
        /// Allocates `v`.
        pub fn new(v: T, _f: Flags) -> Result<Self, AllocError> {
            Ok(Self(std::sync::Arc::new(v)))
        }

        /// Whether both point to the same allocation.
        pub fn ptr_eq(a: &Self, b: &Self) -> bool {
            std::sync::Arc::ptr_eq(&a.0, &b.0)
        }
    }

    impl<T> Clone for Arc<T> {
        fn clone(&self) -> Self {
            Self(self.0.clone())
        }
    }

    impl<T> Deref for Arc<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }
}
