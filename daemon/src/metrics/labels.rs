//! A label and its values: the one place a family's label values are spelled, and how a value
//! finds its slot in a [`Family`](super::Family).
//!
//! Most label sets are enums declared with [`label_set!`](crate::label_set), which writes the
//! enum, its `ALL`, `COUNT`, `label()` and `index()`, and this trait. A type from another
//! crate (the wire's `ErrorCode`, say) gets a label set by implementing the trait on a marker
//! type of one's own, with `Label` the foreign type.

/// A label's name and every value it takes, in page order.
///
/// Contract: `ALL` lists every value once; `index(ALL[i]) == i`; `Array<T>` holds exactly
/// `ALL.len()` elements.
pub trait LabelSet: 'static {
    /// One value of the label.
    type Label: Copy;
    /// The label's name, e.g. `reason`.
    const NAME: &'static str;
    /// Every value, in the order the page lists them.
    const ALL: &'static [Self::Label];
    /// One `T` per value: `[T; ALL.len()]`.
    type Array<T>: AsRef<[T]> + AsMut<[T]>;

    /// An array with `f(i)` at index `i`.
    fn array<T>(f: impl FnMut(usize) -> T) -> Self::Array<T>;
    /// The position of `label` in [`LabelSet::ALL`].
    fn index(label: Self::Label) -> usize;
    /// The value as printed, e.g. `peer_closed`.
    fn label(label: Self::Label) -> &'static str;
}

/// Declares an enum whose variants are the values of one label, each with its spelling on the
/// page, and implements [`LabelSet`] for it.
///
/// ```
/// tether_daemon::label_set! {
///     /// Why a report was refused.
///     pub enum Rejection: "reason" {
///         /// Not JSON.
///         Malformed = "malformed",
///         /// Over the size limit.
///         TooLarge = "too_large",
///     }
/// }
/// assert_eq!(Rejection::COUNT, 2);
/// assert_eq!(Rejection::ALL, [Rejection::Malformed, Rejection::TooLarge]);
/// assert_eq!(Rejection::TooLarge.label(), "too_large");
/// assert_eq!(Rejection::TooLarge.index(), 1);
/// ```
///
/// The enum derives `Debug, Clone, Copy, PartialEq, Eq, Hash`; a variant's index is its
/// position, which is also its place on the page.
#[macro_export]
macro_rules! label_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $Name:ident : $label:literal {
            $( $(#[$vmeta:meta])* $Variant:ident = $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $Name {
            $( $(#[$vmeta])* $Variant, )+
        }

        impl $Name {
            /// How many values the label takes.
            $vis const COUNT: usize = [$($Name::$Variant),+].len();
            /// Every value, in page order; a value's position here is its index.
            $vis const ALL: [$Name; $Name::COUNT] = [$($Name::$Variant),+];

            /// The value as printed on the page.
            $vis const fn label(self) -> &'static str {
                match self {
                    $( $Name::$Variant => $value, )+
                }
            }

            /// Position in [`Self::ALL`].
            #[inline]
            $vis const fn index(self) -> usize {
                self as usize
            }
        }

        impl $crate::metrics::LabelSet for $Name {
            type Label = $Name;
            const NAME: &'static str = $label;
            const ALL: &'static [$Name] = &$Name::ALL;
            type Array<T> = [T; $Name::COUNT];

            fn array<T>(f: impl FnMut(usize) -> T) -> [T; $Name::COUNT] {
                ::std::array::from_fn(f)
            }

            #[inline]
            fn index(label: $Name) -> usize {
                label.index()
            }

            fn label(label: $Name) -> &'static str {
                label.label()
            }
        }
    };
}

#[cfg(test)]
pub(super) mod tests {
    use super::LabelSet;

    crate::label_set! {
        /// A test set, also used by the family tests.
        pub(crate) enum Colour: "colour" {
            Red = "red",
            /// Documented.
            Green = "green",
            Blue = "blue",
        }
    }

    #[test]
    fn one_declaration_gives_all_count_label_index() {
        assert_eq!(Colour::COUNT, 3);
        assert_eq!(<Colour as LabelSet>::NAME, "colour");
        for (i, c) in Colour::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(<Colour as LabelSet>::index(c), i);
            assert_eq!(<Colour as LabelSet>::ALL[i], c);
        }
        let labels: Vec<_> = Colour::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels, ["red", "green", "blue"]);
        let a = <Colour as LabelSet>::array(|i| i * 10);
        assert_eq!(a, [0, 10, 20]);
    }
}
