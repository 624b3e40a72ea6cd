# A small subset of nixpkgs' `lib`, with the same semantics as the real one
# for every function provided (names, argument order, results, and the error
# texts: the module system's messages are nixpkgs' wording). Anything not listed here is simply missing:
# using it fails evaluation, which is the honest outcome for a stand-in.
let
  b = builtins;

  lib = {
    inherit (b)
      all any attrNames attrValues catAttrs concatLists concatMap
      concatStringsSep deepSeq elem elemAt filter foldl' functionArgs
      genList getAttr hasAttr head intersectAttrs isAttrs isBool isFloat
      isFunction isInt isList isPath isString length listToAttrs map
      mapAttrs match removeAttrs replaceStrings seq sort split
      stringLength substring tail throw toJSON trace typeOf zipAttrsWith;

    trivial.release = "26.05";
    version = "26.05-standin";

    # trivial
    id = x: x;
    const = x: _: x;
    flip = f: a: c: f c a;
    boolToString = v: if v then "true" else "false";
    min = x: y: if x < y then x else y;
    max = x: y: if x > y then x else y;
    fix = f: let x = f x; in x;
    extends = overlay: f: final: let prev = f final; in prev // overlay final prev;
    composeManyExtensions = lib.foldr (x: y: final: prev:
      let fy = y final (prev // fx); fx = x final prev; in fx // fy)
      (_: _: { });
    toFunction = v: if b.isFunction v then v else _: v;
    warn = msg: b.trace "warning: ${msg}";
    warnIf = cond: msg: if cond then lib.warn msg else x: x;
    throwIf = cond: msg: if cond then b.throw msg else x: x;
    throwIfNot = cond: msg: if cond then x: x else b.throw msg;

    # lists
    optional = cond: elem: if cond then [ elem ] else [ ];
    optionals = cond: elems: if cond then elems else [ ];
    toList = x: if b.isList x then x else [ x ];
    foldr = op: nul: list:
      let len = b.length list;
          fold' = n: if n == len then nul else op (b.elemAt list n) (fold' (n + 1));
      in fold' 0;
    foldl = op: nul: list: b.foldl' op nul list;
    imap0 = f: list: b.genList (n: f n (b.elemAt list n)) (b.length list);
    imap1 = f: list: b.genList (n: f (n + 1) (b.elemAt list n)) (b.length list);
    flatten = x: if b.isList x then b.concatMap (y: lib.flatten y) x else [ x ];
    unique = b.foldl' (acc: e: if b.elem e acc then acc else acc ++ [ e ]) [ ];
    last = list: b.elemAt list (b.length list - 1);
    range = first: last: if first > last then [ ] else b.genList (n: first + n) (last - first + 1);
    remove = e: b.filter (x: x != e);
    count = pred: b.foldl' (c: x: if pred x then c + 1 else c) 0;
    subtractLists = e: b.filter (x: !(b.elem x e));
    intersectLists = e: b.filter (x: b.elem x e);
    reverseList = xs: let l = b.length xs; in b.genList (n: b.elemAt xs (l - n - 1)) l;
    sortOn = f: b.sort (x: y: f x < f y);
    findFirst = pred: default: list:
      let found = b.filter pred list; in if found == [ ] then default else b.head found;

    # attrsets
    attrByPath = attrPath: default: set:
      let
        lenAttrPath = b.length attrPath;
        attrByPath' = n: s:
          if n == lenAttrPath then s
          else
            let attr = b.elemAt attrPath n; in
            if s ? ${attr} then attrByPath' (n + 1) s.${attr} else default;
      in attrByPath' 0 set;
    hasAttrByPath = attrPath: e:
      let attr = b.head attrPath; in
      if attrPath == [ ] then true
      else if e ? ${attr} then lib.hasAttrByPath (b.tail attrPath) e.${attr}
      else false;
    getAttrFromPath = attrPath: set:
      lib.attrByPath attrPath
        (abort ("cannot find attribute '" + b.concatStringsSep "." attrPath + "'")) set;
    setAttrByPath = attrPath: value:
      let len = b.length attrPath;
          atDepth = n: if n == len then value else { ${b.elemAt attrPath n} = atDepth (n + 1); };
      in atDepth 0;
    optionalAttrs = cond: as: if cond then as else { };
    filterAttrs = pred: set:
      b.listToAttrs (b.concatMap (name: let v = set.${name}; in
        if pred name v then [ { inherit name; value = v; } ] else [ ]) (b.attrNames set));
    mapAttrsToList = f: attrs: b.map (name: f name attrs.${name}) (b.attrNames attrs);
    mapAttrs' = f: set: b.listToAttrs (b.map (attr: f attr set.${attr}) (b.attrNames set));
    nameValuePair = name: value: { inherit name value; };
    genAttrs = names: f: b.listToAttrs (b.map (n: { name = n; value = f n; }) names);
    recursiveUpdateUntil = pred: lhs: rhs:
      let f = attrPath: b.zipAttrsWith (n: values:
            let here = attrPath ++ [ n ]; in
            if b.length values == 1 || pred here (b.elemAt values 1) (b.head values)
            then b.head values
            else f here values);
      in f [ ] [ rhs lhs ];
    recursiveUpdate = lhs: rhs:
      lib.recursiveUpdateUntil (path: lhs: rhs: !(b.isAttrs lhs && b.isAttrs rhs)) lhs rhs;
    isDerivation = v: v.type or null == "derivation";
    attrsToList = set: lib.mapAttrsToList lib.nameValuePair set;

    # strings
    optionalString = cond: s: if cond then s else "";
    concatStrings = b.concatStringsSep "";
    concatMapStrings = f: list: lib.concatStrings (b.map f list);
    concatMapStringsSep = sep: f: list: b.concatStringsSep sep (b.map f list);
    concatLines = list: lib.concatMapStrings (s: s + "\n") list;
    hasPrefix = pref: str: b.substring 0 (b.stringLength pref) str == pref;
    hasSuffix = suffix: content:
      let lenC = b.stringLength content; lenS = b.stringLength suffix; in
      lenC >= lenS && b.substring (lenC - lenS) lenC content == suffix;
    removePrefix = prefix: str:
      if lib.hasPrefix prefix str
      then b.substring (b.stringLength prefix) (b.stringLength str - b.stringLength prefix) str
      else str;
    removeSuffix = suffix: str:
      if lib.hasSuffix suffix str
      then b.substring 0 (b.stringLength str - b.stringLength suffix) str
      else str;
    splitString = sep: s: b.filter b.isString (b.split (lib.escapeRegex sep) s);
    escapeRegex = b.replaceStrings
      (lib.stringToCharacters "\\[{()^$?*+|.") (b.map (c: "\\${c}") (lib.stringToCharacters "\\[{()^$?*+|."));
    stringToCharacters = s: b.genList (p: b.substring p 1 s) (b.stringLength s);
    toUpper = b.replaceStrings (lib.stringToCharacters "abcdefghijklmnopqrstuvwxyz")
      (lib.stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    toLower = b.replaceStrings (lib.stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
      (lib.stringToCharacters "abcdefghijklmnopqrstuvwxyz");
    escapeShellArg = arg:
      let s = toString arg; in
      if b.match "[[:alnum:],._+:@%/-]+" s == null
      then "'${b.replaceStrings [ "'" ] [ "'\\''" ] s}'"
      else s;
    escapeShellArgs = lib.concatMapStringsSep " " lib.escapeShellArg;
    versionOlder = v1: v2: b.compareVersions v2 v1 == 1;
    versionAtLeast = v1: v2: !(lib.versionOlder v1 v2);

    # module system properties (same shapes and priorities as nixpkgs)
    # Lazy in `condition`, as in nixpkgs (checked when the definition is used).
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkOverride = priority: content: { _type = "override"; inherit priority content; };
    mkOptionDefault = lib.mkOverride 1500;
    mkDefault = lib.mkOverride 1000;
    mkImageMediaOverride = lib.mkOverride 60;
    mkForce = lib.mkOverride 50;
    mkVMOverride = lib.mkOverride 10;
    mkOrder = priority: content: { _type = "order"; inherit priority content; };
    mkBefore = lib.mkOrder 500;
    mkAfter = lib.mkOrder 1500;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: lib.mkOption {
      default = false; example = true; type = lib.types.bool;
      description = "Whether to enable ${name}.";
    };
    mkPackageOption = pkgs: name: extra: lib.mkOption {
      type = lib.types.package;
      default = lib.getAttrFromPath (lib.toList (extra.default or name)) pkgs;
    };
    isOption = v: v._type or null == "option";
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    mdDoc = x: x;

    # Option types (checked and merged, see ./types.nix) and the module
    # evaluator (./modules.nix); both read `lib` lazily.
    inherit (import ./types.nix { inherit lib; })
      types mkOptionType mergeEqualOption mergeOneOption mergeDefaultOption;
    inherit (import ./modules.nix { inherit lib; })
      evalModules mergeDefinitions showOption showDefs;
    isType = type: x: (x._type or "") == type;
  };
in
lib
