# `lib.types` of the stand-in nixpkgs: option types that CHECK and MERGE
# like nixpkgs' lib/types.nix, with the same descriptions (error texts name
# them: "is not of type `list of string'"). Only the types the stand-in and
# kdevweb's rendered flakes use are here; a missing one fails evaluation.
{ lib }:
let
  inherit (builtins)
    all any concatLists concatStringsSep elem filter foldl' head isAttrs isBool
    isFunction isInt isList isPath isString length map tail toJSON zipAttrsWith;
  inherit (lib) showOption showDefs mergeDefinitions;

  mkOptionType =
    { name, description ? name, descriptionClass ? null, check ? (_: true)
    , merge ? mergeDefaultOption, ... }@attrs:
    attrs // { _type = "option-type"; inherit name description descriptionClass check merge; };

  prioritySuggestion = ''

    Use `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.'';

  # Several definitions of a single-valued option must agree.
  mergeEqualOption = loc: defs:
    if length defs == 1 then (head defs).value
    else (foldl' (first: def:
      if def.value != first.value then
        throw "The option `${showOption loc}' has conflicting definition values:${showDefs [ first def ]}${prioritySuggestion}"
      else first) (head defs) (tail defs)).value;

  mergeOneOption = loc: defs:
    if length defs == 1 then (head defs).value
    else throw "The option `${showOption loc}' is defined multiple times while it's expected to be unique.\nDefinition values:${showDefs defs}${prioritySuggestion}";

  mergeDefaultOption = loc: defs:
    let list = map (d: d.value) defs; in
    if length list == 1 then head list
    else if all isFunction list then x: mergeDefaultOption loc (map (d: d // { value = d.value x; }) defs)
    else if all isList list then concatLists list
    else if all isAttrs list then foldl' (a: c: a // c) { } list
    else if all isBool list then any (x: x) list
    else if all isString list then concatStringsSep "" list
    else if all isInt list && all (x: x == head list) list then head list
    else throw "Cannot merge definitions of `${showOption loc}'. Definition values:${showDefs defs}";

  # How a type reads inside another type's description ("list of string",
  # "attribute set of (submodule)"), after nixpkgs' optionDescriptionPhrase.
  phrase = ok: t: if ok t.descriptionClass then t.description else "(${t.description})";

  isDerivation = v: isAttrs v && v.type or null == "derivation";
  isStringLike = v: isString v || isPath v || (isAttrs v && (v ? outPath || v ? __toString));

  noun = name: description: check: merge:
    mkOptionType { inherit name description check merge; descriptionClass = "noun"; };

  intBetween = lo: hi: mkOptionType {
    name = "intBetween";
    description = "integer between ${toString lo} and ${toString hi} (both inclusive)";
    check = x: isInt x && x >= lo && x <= hi;
    merge = mergeEqualOption;
  };

  types = rec {
    str = noun "str" "string" isString mergeEqualOption;
    nonEmptyStr = noun "nonEmptyStr" "non-empty string"
      (x: isString x && builtins.match "[ \t\n]*" x == null) mergeEqualOption;
    lines = mkOptionType {
      name = "lines"; description = ''strings concatenated with "\n"''; descriptionClass = "noun";
      check = isString;
      merge = loc: defs: concatStringsSep "\n" (map (d: d.value) defs);
    };
    bool = noun "bool" "boolean" isBool mergeEqualOption;
    int = noun "int" "signed integer" isInt mergeEqualOption;
    ints = {
      positive = mkOptionType {
        name = "positiveInt"; description = "positive integer, meaning >0";
        descriptionClass = "nonRestrictiveClause";
        check = x: isInt x && x > 0; merge = mergeEqualOption;
      };
      unsigned = mkOptionType {
        name = "unsignedInt"; description = "unsigned integer, meaning >=0";
        descriptionClass = "nonRestrictiveClause";
        check = x: isInt x && x >= 0; merge = mergeEqualOption;
      };
      between = intBetween;
    };
    port = intBetween 0 65535;
    path = noun "path" "path"
      (x: isStringLike x && builtins.substring 0 1 (toString x) == "/") mergeEqualOption;
    package = noun "package" "package"
      (x: isDerivation x || (isStringLike x && lib.hasPrefix builtins.storeDir (toString x))) mergeOneOption;
    attrs = noun "attrs" "attribute set" isAttrs (loc: defs: foldl' (a: d: a // d.value) { } defs);
    unspecified = noun "unspecified" "unspecified value" (_: true) mergeDefaultOption;
    raw = noun "raw" "raw value" (_: true) mergeOneOption;

    anything = mkOptionType {
      name = "anything"; description = "anything"; descriptionClass = "noun";
      merge = loc: defs:
        let
          kind = v: if isAttrs v && isStringLike v then "stringCoercibleSet" else builtins.typeOf v;
          kinds = lib.unique (map (d: kind d.value) defs);
          k = head kinds;
        in
        if length kinds > 1 then
          throw "The option `${showOption loc}' has conflicting definitions, in ${concatStringsSep " and " (map (d: "`${d.file}'") defs)}."
        else if k == "list" then (listOf anything).merge loc defs
        else if k == "set" then (attrsOf anything).merge loc defs
        else if k == "lambda" then x: anything.merge loc (map (d: d // { value = d.value x; }) defs)
        else if k == "stringCoercibleSet" then mergeOneOption loc defs
        else mergeEqualOption loc defs;
    };

    listOf = elemType: mkOptionType {
      name = "listOf";
      description = "list of ${phrase (c: c == "noun" || c == "composite") elemType}";
      descriptionClass = "composite";
      check = isList;
      merge = loc: defs:
        map (x: x.value) (filter (x: x ? value) (concatLists (lib.imap1 (n: def:
          lib.imap1 (m: v:
            let r = mergeDefinitions (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ]) elemType
              [ { inherit (def) file; value = v; } ];
            in if r.isDefined then { value = r.mergedValue; } else { })
            def.value) defs)));
      inherit elemType;
    };

    attrsOf = elemType: (lazyAttrsOf elemType) // {
      name = "attrsOf";
      description = "attribute set of ${phrase (c: c == "noun" || c == "composite") elemType}";
      # Entries whose definitions are all under a false mkIf do not exist.
      merge = loc: defs: lib.mapAttrs (_: r: r.mergedValue)
        (lib.filterAttrs (_: r: r.isDefined) (mergeAttrDefs loc elemType defs));
    };

    lazyAttrsOf = elemType: mkOptionType {
      name = "lazyAttrsOf";
      description = "lazy attribute set of ${phrase (c: c == "noun" || c == "composite") elemType}";
      descriptionClass = "composite";
      check = isAttrs;
      merge = loc: defs: lib.mapAttrs (_: r: r.mergedValue) (mergeAttrDefs loc elemType defs);
      inherit elemType;
    };

    nullOr = elemType: mkOptionType {
      name = "nullOr";
      description = "null or ${phrase (c: c == "noun" || c == "conjunction") elemType}";
      descriptionClass = "conjunction";
      check = x: x == null || elemType.check x;
      merge = loc: defs:
        let nulls = length (filter (d: d.value == null) defs); in
        if nulls == length defs then null
        else if nulls != 0 then
          throw "The option `${showOption loc}' is defined both null and not null, in ${concatStringsSep " and " (map (d: "`${d.file}'") defs)}."
        else elemType.merge loc defs;
      inherit elemType;
    };

    enum = values:
      let show = v: if isString v then ''"${v}"'' else if isBool v then lib.boolToString v else toString v; in
      mkOptionType {
        name = "enum";
        description =
          if values == [ ] then "impossible (empty enum)"
          else if length values == 1 then "value ${show (head values)} (singular enum)"
          else "one of ${concatStringsSep ", " (map show values)}";
        descriptionClass = if length values < 2 then "noun" else "conjunction";
        check = x: elem x values;
        merge = mergeEqualOption;
        inherit values;
      };

    either = t1: t2: mkOptionType {
      name = "either";
      description = "${phrase (c: c == "noun" || c == "conjunction") t1} or ${phrase (c: c == "noun" || c == "conjunction") t2}";
      descriptionClass = "conjunction";
      check = x: t1.check x || t2.check x;
      merge = loc: defs:
        if all (d: t1.check d.value) defs then t1.merge loc defs
        else if all (d: t2.check d.value) defs then t2.merge loc defs
        else mergeOneOption loc defs;
    };
    oneOf = ts: lib.foldr either (head ts) (tail ts);

    coercedTo = coercedType: coerceFunc: finalType: finalType // {
      name = "coercedTo";
      description = "${finalType.description} or ${coercedType.description} convertible to it";
      check = x: (coercedType.check x && finalType.check (coerceFunc x)) || finalType.check x;
      merge = loc: defs: finalType.merge loc (map (d: d // {
        value = if finalType.check d.value then d.value else coerceFunc d.value;
      }) defs);
    };

    functionTo = elemType: mkOptionType {
      name = "functionTo";
      description = "function that evaluates to a(n) ${phrase (c: c == "noun" || c == "composite") elemType}";
      descriptionClass = "composite";
      check = isFunction;
      merge = loc: defs: fnArgs: (mergeDefinitions (loc ++ [ "<function body>" ]) elemType
        (map (d: { inherit (d) file; value = d.value fnArgs; }) defs)).mergedValue;
    };

    uniq = elemType: elemType // { merge = mergeOneOption; };

    # A submodule entry is a module evaluation of its own, prefixed with the
    # entry's location; attribute-set definitions are config only (nixpkgs'
    # shorthandOnlyDefinesConfig), and `name` is the entry's attribute name.
    submodule = modules: mkOptionType {
      name = "submodule";
      description = "submodule";
      check = x: isAttrs x || isFunction x || isPath x;
      merge = loc: defs: (lib.evalModules {
        prefix = loc;
        specialArgs = { name = if loc == [ ] then "" else lib.last loc; };
        modules = lib.toList modules ++ map (d:
          if isAttrs d.value then { _file = d.file; config = d.value; }
          else { _file = d.file; imports = [ d.value ]; }) defs;
      }).config;
    };
  };

  mergeAttrDefs = loc: elemType: defs:
    zipAttrsWith (name: defs': mergeDefinitions (loc ++ [ name ]) elemType defs')
      (map (d: lib.mapAttrs (_: v: { inherit (d) file; value = v; }) d.value) defs);
in
{
  inherit types mkOptionType mergeEqualOption mergeOneOption mergeDefaultOption;
}
