# The stand-in module evaluator behind `lib.nixosSystem` (and submodules).
#
# A small rewrite of nixpkgs' lib/modules.nix that is as STRICT as the real
# one where real users hit it; a stand-in is only worth what it rejects:
#  * a module is a path (imported), a function of the module arguments
#    ({ config, options, lib, pkgs, modulesPath, name? } // specialArgs) or
#    an attrset; `imports` are followed and deduplicated by key (file path,
#    the module's `key`, else "<parent>:anon-N");
#  * full form (`options` / `config`) or shorthand (everything is config);
#    a full-form module with other attributes is an error, as in nixpkgs;
#  * an option exists only if an imported module declares it: defining
#    anything else fails with "The option `a.b' does not exist." (as soon as
#    `config` is used, like nixpkgs' _module.check); declaring an option twice
#    fails with "is already declared in";
#  * mkIf/mkMerge/mkOverride/mkOrder are pushed down to the options without
#    forcing mkIf conditions; at an option the best priority wins (mkForce 50,
#    plain 100, mkDefault 1000, the declaration's default 1500), mkOrder
#    sorts, then every definition is checked against the option's type
#    ("A definition for option `x' is not of type `string'.") and merged by
#    it (see ./types.nix). An option with no definition and no default fails
#    when read: "was accessed but has no value defined".
# Not implemented: disabledModules, _module.args, freeform types, mkRenamed*,
# option merging across declarations (submodule option extension).
{ lib }:
let
  inherit (builtins)
    all attrNames attrValues concatMap elemAt filter foldl' genericClosure genList
    head isAttrs isBool isFunction isList isPath isString length map sort toJSON;

  imap0 = f: list: genList (n: f n (elemAt list n)) (length list);

  showOption = parts: builtins.concatStringsSep "." (map (p:
    if p == "*" || builtins.match "<.+>" p != null || builtins.match "[A-Za-z_][A-Za-z0-9_'-]*" p != null
    then p else toJSON p) parts);

  # A short, never-failing rendering of a definition's value for messages.
  showValue = depth: v:
    let t = builtins.typeOf v; in
    if t == "string" then toJSON v
    else if t == "int" || t == "float" then toString v
    else if t == "bool" then lib.boolToString v
    else if t == "null" then "null"
    else if t == "path" then toString v
    else if t == "lambda" then "<function>"
    else if t == "list" then
      (if v == [ ] then "[ ]" else if depth > 1 then "[ ... ]"
       else "[ ${builtins.concatStringsSep " " (map (showValue (depth + 1)) v)} ]")
    else if v.type or null == "derivation" then "<derivation ${v.name or "?"}>"
    else if v ? _type then "<${v._type}>"
    else if v == { } then "{ }"
    else if depth > 1 then "{ ... }"
    else "{ ${builtins.concatStringsSep " " (map (n: "${toJSON n} = ${showValue (depth + 1) v.${n}};") (attrNames v))} }";
  safeShow = v: let r = builtins.tryEval (showValue 0 v); in if r.success then r.value else "<error>";
  showDefs = defs: builtins.concatStringsSep "" (map (d: "\n- In `${d.file}': ${safeShow d.value}") defs);

  # Load one entry of a module list: returns { key; file; module; }.
  load = args: fallbackKey: m:
    let
      isFile = isPath m || isString m;
      fn = if isFile then import m else m;
      value = if isFunction fn then fn args else fn;
      file = if isFile then toString m else value._file or fallbackKey;
      key = if isFile then toString m else value.key or fallbackKey;
      extra = lib.subtractLists
        [ "imports" "options" "config" "key" "_file" "meta" "disabledModules" "_class" ]
        (attrNames value);
    in
    if !(isAttrs value) then
      throw "Module `${file}' is not an attribute set (it is a ${builtins.typeOf value})."
    else if (value ? config || value ? options) && extra != [ ] then
      throw "Module `${file}' has an unsupported attribute `${head extra}'. This is caused by introducing a top-level `config' or `options' attribute. Add configuration attributes immediately on the top level instead, or move all of them (namely: ${builtins.concatStringsSep " " extra}) into the explicit `config' attribute."
    else {
      inherit key file;
      module = value;
      imports = value.imports or [ ];
    };

  collect = args: rootFile: modules: genericClosure {
    startSet = imap0 (i: load args "${rootFile}:anon-${toString i}") modules;
    operator = item: imap0 (i: load args "${item.key}:anon-${toString i}") item.imports;
  };

  isFullForm = v: v ? config || v ? options;
  configOf = v:
    if isFullForm v then v.config or { }
    else removeAttrs v [ "imports" "key" "_file" "meta" "disabledModules" "_class" ];

  # -- declarations -----------------------------------------------------------
  # [{ file; options; }] -> tree whose leaves are { _isOpt; loc; file; decl; }.
  mergeDecls = loc: decls:
    lib.mapAttrs (name: ds:
      let
        l = loc ++ [ name ];
        opts = filter (d: lib.isOption d.value) ds;
        sets = filter (d: !(lib.isOption d.value)) ds;
      in
      if opts == [ ] then
        (if all (d: isAttrs d.value) sets then mergeDecls l (map (d: { inherit (d) file; options = d.value; }) sets)
         else throw "The option declaration `${showOption l}' in `${(head sets).file}' is neither an option (lib.mkOption) nor an attribute set of options.")
      else if length opts > 1 then
        throw "The option `${showOption l}' in `${(elemAt opts 1).file}' is already declared in `${(head opts).file}'."
      else if sets != [ ] then
        throw "The option `${showOption l}' in `${(head opts).file}' is a prefix of options in `${(head sets).file}'."
      else { _isOpt = true; loc = l; file = (head opts).file; decl = (head opts).value; })
      (builtins.zipAttrsWith (_: vs: vs)
        (map (d: lib.mapAttrs (_: v: { inherit (d) file; value = v; }) d.options) decls));

  # -- definitions ------------------------------------------------------------
  # A definition on its way down: value plus the properties pushed onto it.
  defItem = file: value: { inherit file value; conds = [ ]; prio = null; order = 1000; };

  # Expand mkMerge/mkIf/mkOverride/mkOrder without forcing any condition.
  expand = it:
    let v = it.value; t = if isAttrs v then v._type or null else null; in
    if t == "merge" then concatMap (c: expand (it // { value = c; })) v.contents
    else if t == "if" then expand (it // { conds = it.conds ++ [ v.condition ]; value = v.content; })
    else if t == "override" then
      expand (it // { prio = if it.prio == null then v.priority else it.prio; value = v.content; })
    else if t == "order" then expand (it // { order = v.priority; value = v.content; })
    else [ it ];

  checkCond = loc: c:
    if isBool c then c
    else throw "mkIf called with a non-Boolean condition (option `${showOption loc}')";

  prioOf = it: if it.prio == null then 100 else it.prio;

  # Merge one option's definition items with its type: { isDefined; mergedValue; }.
  mergeItems = loc: type: items:
    let
      exp = concatMap expand items;
      active = filter (it: all (checkCond loc) it.conds) exp;
      best = foldl' (m: it: lib.min m (prioOf it)) 100000 active;
      winners = map (it: { inherit (it) file value; })
        (sort (x: y: x.order < y.order) (filter (it: prioOf it == best) active));
      invalid = filter (d: !(type.check d.value)) winners;
    in
    {
      isDefined = active != [ ];
      mergedValue =
        if active == [ ] then
          throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option."
        else if invalid != [ ] then
          throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs invalid}"
        else type.merge loc winners;
    };

  # For types: merge plain [{ file; value; }] definitions.
  mergeDefinitions = loc: type: defs: mergeItems loc type (map (d: defItem d.file d.value) defs);

  leaf = opt: items:
    let
      decl = opt.decl;
      type = decl.type or lib.types.unspecified;
      defaults = lib.optional (decl ? default) (defItem opt.file (lib.mkOptionDefault decl.default));
      r = mergeItems opt.loc type (defaults ++ items);
      value = (decl.apply or (x: x)) r.mergedValue;
    in
    {
      config = value;
      options = decl // {
        inherit value type;
        inherit (r) isDefined;
        loc = opt.loc;
        declarations = [ opt.file ];
        files = lib.unique (map (it: it.file) items);
      };
      unmatched = [ ];
    };

  # Walk a node of the declaration tree (an attribute set of options) with the
  # definitions that reach it. Its attribute names come from the declarations
  # only, so reading config never forces another module's definitions.
  walk = loc: node: items:
    let
      exp = concatMap expand items;
      notSet = filter (it: !(isAttrs it.value) || it.value ? _type || it.value ? outPath) exp;
      sets = if notSet == [ ] then exp else
        let it = head notSet; in
        throw "The option path `${showOption loc}' is an attribute set of options, but it is defined as ${safeShow it.value} in `${it.file}'.";
      below = name: concatMap (it: if it.value ? ${name} then [ (it // { value = it.value.${name}; }) ] else [ ]) sets;
      unmatchedHere = concatMap (it: map (n: { loc = loc ++ [ n ]; inherit (it) file; value = it.value.${n}; })
        (filter (n: !(node ? ${n})) (attrNames it.value))) sets;
      children = lib.mapAttrs (name: sub:
        if sub._isOpt or false then leaf sub (below name) else walk (loc ++ [ name ]) sub (below name)) node;
    in
    {
      config = lib.mapAttrs (_: c: c.config) children;
      options = lib.mapAttrs (_: c: c.options) children;
      unmatched = unmatchedHere ++ concatMap (c: c.unmatched) (attrValues children);
    };

  # evalModules: returns { config; options; modules; } (modules = keys, in order).
  evalModules = { modules, specialArgs ? { }, prefix ? [ ] }:
    let
      args = { inherit lib config options; } // specialArgs;
      items = collect args (if prefix == [ ] then "<evalModules>" else showOption prefix) modules;
      declTree = mergeDecls prefix (map (it: { inherit (it) file; options = it.module.options; })
        (filter (it: it.module ? options) items));
      tree = walk prefix declTree (map (it: defItem it.file (configOf it.module)) items);
      check =
        if tree.unmatched == [ ] then null
        else let d = head tree.unmatched; in
          throw "The option `${showOption d.loc}' does not exist. Definition values:${showDefs [ d ]}";
      config = builtins.seq check tree.config;
      options = tree.options;
    in
    { inherit config options; modules = map (it: it.key) items; };
in
{
  inherit evalModules mergeDefinitions showOption showDefs;
}
